"""Zero-downtime scenarios under Locust load, each printed as a row of one markdown table.

    python -m tools.load_scenarios                  # long form: 60 s of load per scenario
    python -m tools.load_scenarios --seconds 12     # short form (what `make test` runs)
    python -m tools.load_scenarios --only promotion,sigterm

Scenarios (50 users by default, for the whole sequence of each):

- promotion: ``predictor promote`` then ``predictor rollback`` under load, announced over
  Redis; every worker converges (``predictor_model_info{pid}``), zero failed requests.
- refusal: a corrupt artifact, a wrongly signed one and a truncated-but-signed one are
  promoted under load (store polling, no Redis); each is refused by every worker
  (``predictor_model_load_failures_total{reason}`` and a log line), version 1 keeps
  serving, zero failed requests.
- sigterm: two pods behind nginx, one gets SIGTERM (drain, then graceful stop) with nginx
  left as it is; nothing is lost.
- rehearsal: the rolling update of ``tools/rehearsal.py``; zero failed requests, and every
  answer after the cut-over carries the new version. Its clients open a connection per
  request: an nginx reload (this rehearsal's stand-in for a Kubernetes endpoints update)
  closes idle keep-alive client connections and races with a request sent at that
  instant, which a real endpoints update never does.
- recycling: ``PREDICTOR_MAX_REQUESTS`` 200 (jitter 50) under load, with a promotion in the
  middle; no request is lost and no recycled worker serves the old version.
- nginx-reloads (only with ``--only``): nginx reloaded every 0.3 s and nothing else; it
  measures that race (``--connection keep-alive`` loses a request now and then).

promotion, refusal and recycling load gunicorn directly (no nginx retry could hide a
failure); sigterm and rehearsal go through nginx, as the Service would. Locust runs as
its own process with ``loadtests/zero_downtime_locustfile.py``, which records the
version of every answer. Every server listens on a free loopback port and is stopped by
its PID. Exit status 1 when any scenario fails its checks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tools.attacks import cut_short_and_resign, flip_a_byte
from tools.rehearsal import rolling_update
from tools.scenarios_config import (
    GOOD,
    MODEL,
    NEW,
    NGINX_NO_RATE_LIMIT,
    markdown_table,
    percentile,
    verdict,
    wait_for,
)
from tools.scenarios_config import ZERO_DOWNTIME_BAD_VERSIONS as BAD_VERSIONS
from tools.scenarios_config import ZERO_DOWNTIME_SIGNING_KEY as SIGNING_KEY
from tools.stack import (
    REPO,
    VENV_BIN,
    Command,
    Gunicorn,
    ManagedProcess,
    Nginx,
    RedisServer,
    StackError,
    wait_until,
)

LOCUST = VENV_BIN / "locust"
PREDICTOR = VENV_BIN / "predictor"
LOCUSTFILE = REPO / "loadtests" / "zero_downtime_locustfile.py"


@dataclass
class Config:
    users: int = 50
    seconds: float = 60.0  # load per scenario, at least (the sequence may need longer)
    workers: int = 2
    drain_seconds: float = 2.0
    graceful_timeout: int = 10
    endpoint_lag: float = 0.5
    max_requests: int = 200
    max_requests_jitter: int = 50
    think_ms: float = 0.0
    connection: str | None = None  # keep-alive | close; None: the scenario's own choice
    run_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    log: Callable[[str], None] = print


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    requests: int = 0
    failures: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    converge_s: float | None = None
    notes: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


TABLE_HEADER = (
    "| scenario | requests | failures | p50 ms | p99 ms | seconds to converge | checked |\n"
    "|---|---:|---:|---:|---:|---:|---|"
)


def table_row(row: Row) -> str:
    converge = "—" if row.converge_s is None else f"{row.converge_s:.2f}"
    return (
        f"| {row.scenario} | {row.requests} | {row.failures} | {row.p50_ms:.1f} "
        f"| {row.p99_ms:.1f} | {converge} | {verdict(row.notes, row.problems)} |"
    )


def table(rows: Iterable[Row]) -> str:
    return markdown_table(TABLE_HEADER, (table_row(r) for r in rows))


@dataclass
class Answer:
    start: float  # epoch seconds, when the request was sent
    ms: float
    status: int
    version: str | None
    error: str | None


@dataclass
class LoadResult:
    answers: list[Answer]
    totals: dict[str, int]  # Locust's own count (--json-file)
    returncode: int
    stderr: str
    ready_at: float
    stopped_at: float

    @property
    def failed(self) -> list[Answer]:
        return [a for a in self.answers if a.error is not None]

    def percentile(self, q: float) -> float:
        return percentile((a.ms for a in self.answers), q)

    def versions(self, after: float = 0.0, before: float = float("inf")) -> Counter:
        """Versions of the answers sent at ``after`` or later and complete before ``before``."""
        return Counter(
            a.version
            for a in self.answers
            if a.version and after <= a.start and a.start + a.ms / 1000.0 < before
        )

    def longest_gap(self) -> float:
        """Longest time with no request sent: a stall of every user shows here."""
        starts = sorted(a.start for a in self.answers)
        return max((b - a for a, b in zip(starts, starts[1:], strict=False)), default=0.0)

    def row(self, scenario: str) -> Row:
        row = Row(
            scenario,
            requests=len(self.answers),
            failures=len(self.failed),
            p50_ms=self.percentile(0.50),
            p99_ms=self.percentile(0.99),
        )
        if not self.answers:
            row.problems.append("no request was made")
        if self.failed:
            common = Counter(a.error for a in self.failed).most_common(3)
            row.problems.append(
                f"{len(self.failed)} failed: " + ", ".join(f"{n}x {e}" for e, n in common)
            )
        if self.totals.get("num_requests") != len(self.answers) or self.totals.get(
            "num_failures"
        ) != len(self.failed):
            row.problems.append(f"Locust counted {self.totals}, the recording {len(self.answers)}")
        if self.returncode != 0 and not self.failed:
            row.problems.append(f"locust exited {self.returncode}: {self.stderr[-500:]}")
        return row


# --------------------------------------------------------------------------
# Locust as a separate process
# --------------------------------------------------------------------------


class Load(Command):
    """One Locust run under tools/stack.py's supervisor (its own session, a log, stopped
    by PID): starts, reports when load flows, stops on request, parses the answers."""

    def __init__(
        self, host: str, out: Path, cfg: Config, max_seconds: float, connection: str = "keep-alive"
    ) -> None:
        self.host, self.out, self.cfg = host, out, cfg
        self.connection = cfg.connection or connection
        self.max_seconds = int(max_seconds)
        self.ready_at = 0.0
        out.mkdir(parents=True, exist_ok=True)
        self.answers_file = out / "answers.jsonl"
        self.ready_file = out / "load-ready"
        self.stop_file = out / "load-stop"
        argv = [
            str(LOCUST), "-f", str(LOCUSTFILE), "--headless", "-H", self.host,
            "-u", str(cfg.users), "-r", str(cfg.users),
            "-t", f"{self.max_seconds}s", "--stop-timeout", "5", "--only-summary",
            "--json-file", str(out / "locust"), "--answers-file", str(self.answers_file),
            "--ready-file", str(self.ready_file), "--stop-file", str(self.stop_file),
            "--ready-after", str(cfg.users * 2), "--think-ms", str(cfg.think_ms),
            "--connection", self.connection,
        ]  # fmt: skip
        # cwd: a directory with no locust.conf, so only these arguments count
        super().__init__(out, "locust", argv, cwd=out)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}

    def start(self, timeout: float = 60.0) -> Load:
        if not LOCUST.exists():
            raise StackError(f"{LOCUST} missing: pip install -r deps/pip-load.txt")
        for f in (self.answers_file, self.ready_file, self.stop_file):
            f.unlink(missing_ok=True)
        super().start()
        try:
            wait_until(self.ready_file.exists, timeout, f"Locust gets answers from {self.host}",
                       self.alive)  # fmt: skip
        except StackError as exc:
            self.kill()
            raise StackError(f"{exc}:\n{self.log_tail()}") from None
        self.ready_at = time.time()
        return self

    def at(self, fraction: float) -> None:
        """Sleep until ``fraction`` of the configured load time has passed since ready."""
        time.sleep(max(0.0, self.ready_at + fraction * self.cfg.seconds - time.time()))

    def finish(self, tail: float = 2.0) -> LoadResult:
        """Keep the load at least ``cfg.seconds`` and ``tail`` s more, then stop and parse it."""
        time.sleep(max(0.0, self.ready_at + self.cfg.seconds - time.time()))
        time.sleep(tail)
        if not self.alive():
            raise StackError(
                f"Locust ended before the sequence did (-t {self.max_seconds}s):\n{self.log_tail()}"
            )
        stopped_at = time.time()
        self.stop_file.touch()
        if not self.wait(60):
            self.kill()
            raise StackError(f"Locust did not stop within 60s:\n{self.log_tail()}")
        assert self.proc is not None
        returncode = self.proc.returncode
        if not self.answers_file.exists():
            raise StackError(f"Locust wrote no answers file:\n{self.log_tail()}")
        answers = [Answer(*json.loads(line)) for line in self.answers_file.read_text().splitlines()]
        totals: dict[str, int] = {"num_requests": 0, "num_failures": 0}
        with contextlib.suppress(OSError, ValueError):
            for entry in json.loads((self.out / "locust.json").read_text()):
                totals["num_requests"] += entry["num_requests"]
                totals["num_failures"] += entry["num_failures"]
        return LoadResult(answers, totals, returncode, self.log_tail(), self.ready_at, stopped_at)


# --------------------------------------------------------------------------
# the store, the CLI, the metrics
# --------------------------------------------------------------------------


def build_store(root: Path, key: str = SIGNING_KEY) -> Path:
    """A store with iris 1 (current) and 2 signed with ``key``, and the bad versions 3-5."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from service.manifest import Feature
    from service.publish import publish_estimator
    from service.store import ModelStore

    store = ModelStore(root)
    iris = load_iris()
    features = [Feature(name=n) for n in iris.feature_names]

    def publish(version: str, c: float, signing_key: str) -> Path:
        estimator = LogisticRegression(C=c, max_iter=1000).fit(iris.data, iris.target)
        publish_estimator(
            store, estimator, name=MODEL, version=version, features=features,
            output_labels=[str(n) for n in iris.target_names],
            sample_input=iris.data[:2].tolist(), signing_key=signing_key.encode(),
            description=f"zero-downtime rehearsal, C={c}",
        )  # fmt: skip
        return store.version_dir(MODEL, version)

    publish(GOOD, 1.0, key)
    store.promote(MODEL, GOOD)
    publish(NEW, 0.5, key)
    # 3: bit rot after publishing: no artifact matches its digest any more.
    flip_a_byte(publish("3", 0.7, key))
    # 4: a valid artifact signed by someone without the service's key.
    publish("4", 0.8, key + "-not-ours")
    # 5: a publisher bug: the files are cut short but digested and signed as they are.
    cut_short_and_resign(publish("5", 0.9, key), key.encode())
    return root


def predictor_cli(*args: str, redis_url: str | None = None) -> float:
    """Run ``predictor ARGS`` as an operator would; returns the time it returned."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTOR_")}
    env["PREDICTOR_SIGNING_KEY"] = SIGNING_KEY  # the key the store is signed with (build_store)
    if redis_url:
        env["PREDICTOR_REDIS_URL"] = redis_url
    try:
        # The CLI imports scikit-learn: a minute or more on a busy 2-core machine. The limit
        # only stops a hang; the scenario's checks wait for the workers, not for the CLI.
        result = subprocess.run(
            [str(PREDICTOR), *args], capture_output=True, text=True, timeout=300, env=env
        )
    except subprocess.TimeoutExpired:
        raise StackError(f"predictor {' '.join(args)} did not return within 300 s") from None
    if result.returncode != 0:
        raise StackError(f"predictor {' '.join(args)} failed: {result.stderr}")
    return time.time()


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def served_by_worker(url: str, model: str = MODEL) -> dict[int, set[str]]:
    """Versions each worker (pid) reports as serving: predictor_model_info{pid} == 1."""
    out: dict[int, set[str]] = {}
    for name, labels, value in scrape(url):
        if name == "predictor_model_info" and labels.get("model") == model:
            versions = out.setdefault(int(labels["pid"]), set())
            if value == 1:
                versions.add(labels["version"])
    return out


def load_failures(url: str, version: str, model: str = MODEL) -> dict[str, float]:
    """predictor_model_load_failures_total by reason for one version (all workers summed)."""
    out: dict[str, float] = {}
    for name, labels, value in scrape(url):
        if (
            name == "predictor_model_load_failures_total"
            and labels.get("model") == model
            and labels.get("version") == version
        ):
            out[labels["reason"]] = out.get(labels["reason"], 0.0) + value
    return out


def requests_served(url: str) -> float:
    """Predictions answered (every POST route) by one pod, all workers summed."""
    return sum(
        v for n, labels, v in scrape(url)
        if n == "predictor_http_requests_total" and labels.get("method") == "POST"
    )  # fmt: skip


def all_serve(pod: Gunicorn, version: str) -> Callable[[], bool]:
    """Every live worker of ``pod`` serves ``version`` and nothing else."""

    def check() -> bool:
        live = pod.worker_pids()
        served = served_by_worker(pod.url)
        return bool(live) and all(served.get(pid) == {version} for pid in live)

    return check


def pod(
    cfg: Config, run: Path, store: Path, name: str, drain: bool = False, **kw: object
) -> Gunicorn:
    """A gunicorn "pod" on a free port; ``drain``: the drain delay on SIGTERM (else none)."""
    env = {
        "PREDICTOR_SIGNING_KEY": SIGNING_KEY,
        "PREDICTOR_DRAIN_SECONDS": str(cfg.drain_seconds if drain else 0),
        "PREDICTOR_GRACEFUL_TIMEOUT": str(cfg.graceful_timeout),
        **kw.pop("env", {}),  # type: ignore[dict-item]
    }
    return Gunicorn(
        run, store, name=name, workers=cfg.workers, env=env, inherit_settings=False, **kw
    )  # type: ignore[arg-type]


def copy_store(template: Path, target: Path, current: str = GOOD) -> Path:
    shutil.copytree(template, target)
    from service.store import ModelStore

    if current != GOOD:
        ModelStore(target).promote(MODEL, current)
    return target


def log_has(server: Gunicorn, text: str) -> bool:
    try:
        return text in server.log_file.read_text(errors="replace")
    except OSError:
        return False


def check_versions(
    row: Row, result: LoadResult, want: str, after: float, before: float, what: str
) -> None:
    seen = result.versions(after, before)
    wrong = {v: n for v, n in seen.items() if v != want}
    if wrong:
        row.problems.append(f"{what}: {sum(wrong.values())} answers carried {sorted(wrong)}")
    if not seen:
        row.problems.append(f"{what}: no answer at all")


class Servers:
    """Stops, by PID, everything a scenario started (in reverse order); Locust is killed,
    not stopped: a scenario that ends early has no answers left to wait for."""

    def __init__(self) -> None:
        self.items: list[ManagedProcess] = []

    def add(self, item):  # noqa: ANN001, ANN201 - returns its argument
        self.items.append(item)
        return item

    def close(self) -> None:
        for item in reversed(self.items):
            with contextlib.suppress(Exception):
                if isinstance(item, Load):
                    item.kill()
                else:
                    item.stop()


def start_all(servers: Servers, *pods: Gunicorn) -> tuple[Gunicorn, ...]:
    """Start pods side by side (each boot imports scikit-learn: seconds on a busy machine)."""
    for p in pods:
        servers.add(p)
    with ThreadPoolExecutor(len(pods)) as pool:
        for future in [pool.submit(p.start) for p in pods]:
            future.result()
    return pods


def redis_pod_under_load(
    s: Servers, cfg: Config, template: Path, run: Path
) -> tuple[RedisServer, Gunicorn, Load]:
    """Redis, one pod announcing over it (its own copy of the store), Locust on the pod."""
    redis = s.add(RedisServer(run).start())
    store = copy_store(template, run / "models")
    api = s.add(pod(cfg, run, store, "pod", redis_url=redis.url).start())
    # -t only stops a hung run (finish() stops Locust): five CLI calls, each importing
    # scikit-learn, can take minutes on a busy 2-core machine.
    return redis, api, s.add(Load(api.url, run / "load", cfg, cfg.seconds + 900).start())


# --------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------


def scenario_promotion(cfg: Config, template: Path, run: Path) -> Row:
    s = Servers()
    try:
        redis, api, load = redis_pod_under_load(s, cfg, template, run)
        store = str(api.store)
        load.at(0.3)
        t_promote = time.time()
        promoted = predictor_cli("promote", MODEL, NEW, "--store", store, redis_url=redis.url)
        conv_new = wait_for(all_serve(api, NEW), 10, f"every worker serves {NEW}")
        load.at(0.65)
        # At least 2 s of load on version 2 before the rollback, however long the CLI took
        # (it imports scikit-learn: seconds on a loaded machine).
        time.sleep(max(0.0, conv_new + 2.0 - time.time()))
        t_rollback = time.time()
        rolled = predictor_cli("rollback", MODEL, "--store", store, redis_url=redis.url)
        conv_back = wait_for(all_serve(api, GOOD), 10, f"every worker serves {GOOD} again")
        result = load.finish()
    finally:
        s.close()
    row = result.row("promotion + rollback, Redis notice (gunicorn, 2 workers)")
    row.converge_s = max(conv_new - promoted, conv_back - rolled)
    check_versions(row, result, GOOD, 0, t_promote, "before the promotion")
    check_versions(row, result, NEW, conv_new, t_rollback, "after convergence on 2")
    check_versions(row, result, GOOD, conv_back, float("inf"), "after convergence on 1")
    row.notes = (
        f"{cfg.workers} workers on v2 {conv_new - promoted:.2f}s after `promote`, "
        f"back on v1 {conv_back - rolled:.2f}s after `rollback`; every answer after each "
        "convergence carries its version"
    )
    return row


def scenario_refusal(cfg: Config, template: Path, run: Path) -> Row:
    s = Servers()
    refused_after: dict[str, float] = {}
    reasons: dict[str, str] = {}
    try:
        api = s.add(pod(cfg, run, copy_store(template, run / "models"), "pod").start())
        load = s.add(Load(api.url, run / "load", cfg, cfg.seconds + 120).start())
        for i, (version, (_, expected)) in enumerate(BAD_VERSIONS.items()):
            load.at(0.2 + 0.25 * i)
            promoted = predictor_cli("promote", MODEL, version, "--store", str(api.store))

            def refused(version: str = version, expected: str | None = expected) -> bool:
                counts = load_failures(api.url, version)
                reason = expected or max(counts, key=counts.get, default="")
                reasons[version] = reason
                return counts.get(reason, 0) >= cfg.workers and all_serve(api, GOOD)()

            refused_after[version] = wait_for(refused, 10, f"every worker refuses {version}")
            refused_after[version] -= promoted
        result = load.finish()
        logs = {v: log_has(api, f"version {v} refused ({r}") for v, r in reasons.items()}
    finally:
        s.close()
    row = result.row(f"refused versions, store polling (gunicorn, {cfg.workers} workers)")
    row.converge_s = max(refused_after.values())
    check_versions(row, result, GOOD, 0, float("inf"), "whole run")
    row.problems += [
        f"no log line for the refusal of version {v}" for v, ok in logs.items() if not ok
    ]
    row.notes = "v1 answered every request; every worker refused " + ", ".join(
        f"{what} ({reasons[v]})" for v, (what, _) in BAD_VERSIONS.items()
    )
    return row


def scenario_sigterm(cfg: Config, template: Path, run: Path) -> Row:
    s = Servers()
    try:
        store = copy_store(template, run / "models")
        a, b = start_all(
            s, pod(cfg, run, store, "pod-a", True), pod(cfg, run, store, "pod-b", True)
        )
        nginx = s.add(Nginx(run, [a.address, b.address], values=NGINX_NO_RATE_LIMIT).start())
        load = s.add(Load(nginx.url, run / "load", cfg, cfg.seconds + 120).start())
        load.at(0.35)
        served_before = requests_served(a.url)
        a.signal(signal.SIGTERM)
        terminated = time.time()
        time.sleep(max(0.0, cfg.drain_seconds - 0.5))
        during_drain = requests_served(a.url) - served_before  # nginx still sends it traffic
        if not a.wait(cfg.drain_seconds + cfg.graceful_timeout + 10):
            raise StackError("pod-a did not exit within drain + graceful timeout")
        exited = time.time()
        result = load.finish()
        entries = nginx.access_log_entries()
    finally:
        s.close()
    row = result.row("SIGTERM of one of two pods (nginx, drain)")
    row.converge_s = exited - terminated
    retried = sum(1 for e in entries if "," in e["upstream_addr"])
    not_ok = Counter(e["status"] for e in entries if e["status"] != 200)
    if not_ok:
        row.problems.append(f"nginx answered {dict(not_ok)}")
    if during_drain <= 0:
        row.problems.append("pod-a answered nothing while draining: its listener closed early")
    if exited - terminated < cfg.drain_seconds:
        row.problems.append(
            f"pod-a exited {exited - terminated:.2f}s after SIGTERM, before the drain"
        )
    if result.versions(after=exited) == Counter():
        row.problems.append("no answer after pod-a exited")
    row.notes = (
        f"pod-a answered {during_drain:.0f} requests during its {cfg.drain_seconds:g}s drain, "
        f"exited {exited - terminated:.2f}s after SIGTERM; nginx retried {retried} on pod-b"
    )
    return row


def scenario_rehearsal(cfg: Config, template: Path, run: Path) -> Row:
    s = Servers()
    try:
        old = s.add(pod(cfg, run, copy_store(template, run / "models-old"), "pod-old", True))
        old.start()
        # The new pod template: its own store whose current is the new version.
        new = s.add(pod(cfg, run, copy_store(template, run / "models-new", NEW), "pod-new", True))
        nginx = s.add(Nginx(run, [old.address], values=NGINX_NO_RATE_LIMIT).start())
        # One connection per request: nginx's reload closes idle keep-alive client connections,
        # which a Kubernetes endpoints update never does (see scenario_nginx_reloads).
        load = s.add(Load(nginx.url, run / "load", cfg, cfg.seconds + 180, "close").start())
        load.at(0.25)
        rollout = rolling_update(
            nginx, old, new, endpoint_lag=cfg.endpoint_lag,
            exit_timeout=cfg.drain_seconds + cfg.graceful_timeout + 10,
            log=lambda line: cfg.log(f"    rehearsal {line}"),
        )  # fmt: skip
        result = load.finish()
        entries = nginx.access_log_entries()
    finally:
        s.close()
    row = result.row("rolling update rehearsal: maxSurge 1, maxUnavailable 0 (nginx)")
    row.converge_s = rollout.cut_over - rollout.started
    check_versions(row, result, GOOD, 0, rollout.started, "before the rollout")
    check_versions(row, result, NEW, rollout.cut_over, float("inf"), "after the cut-over")
    not_ok = Counter(e["status"] for e in entries if e["status"] != 200)
    if not_ok:
        row.problems.append(f"nginx answered {dict(not_ok)}")
    mixed = result.versions(rollout.both_serving, rollout.cut_over)
    row.notes = (
        f"clients: a connection per request; new pod ready "
        f"{rollout.new_ready - rollout.started:.2f}s after start; "
        f"{mixed.get(GOOD, 0)} v1 + {mixed.get(NEW, 0)} v2 answers while both served; every "
        f"answer after the cut-over is v2; old pod exited "
        f"{rollout.old_exited - rollout.old_terminated:.2f}s after SIGTERM"
    )
    return row


def scenario_recycling(cfg: Config, template: Path, run: Path) -> Row:
    s = Servers()
    try:
        env = {
            "PREDICTOR_MAX_REQUESTS": str(cfg.max_requests),
            "PREDICTOR_MAX_REQUESTS_JITTER": str(cfg.max_requests_jitter),
        }
        api = s.add(pod(cfg, run, copy_store(template, run / "models"), "pod", env=env).start())
        load = s.add(Load(api.url, run / "load", cfg, cfg.seconds + 120).start())
        load.at(0.5)
        promoted = predictor_cli("promote", MODEL, NEW, "--store", str(api.store))
        converged = wait_for(all_serve(api, NEW), 10, f"every worker serves {NEW}")
        result = load.finish()
        booted = len(re.findall(r"Booting worker with pid", api.log_file.read_text()))
    finally:
        s.close()
    row = result.row(
        f"worker recycling, max_requests {cfg.max_requests}±{cfg.max_requests_jitter} "
        "(gunicorn, 2 workers)"
    )
    recycled = booted - cfg.workers
    row.converge_s = converged - promoted
    if recycled < 2:
        row.problems.append(f"only {recycled} workers were recycled")
    # A worker recycled after the promotion boots from the master's preloaded app.
    check_versions(row, result, NEW, converged, float("inf"), "after convergence on 2")
    row.notes = (
        f"{recycled} workers recycled; a promotion in the middle: every answer after "
        "convergence is v2, recycled workers included"
    )
    return row


def scenario_nginx_reloads(cfg: Config, template: Path, run: Path) -> Row:
    """Opt-in: nginx reloaded every 0.3 s under load, nothing else. With keep-alive
    clients it shows the race the rehearsal avoids: a graceful nginx worker closes idle
    client connections, and a request the client sent at that instant is lost."""
    s = Servers()
    reloads = 0
    try:
        api = s.add(pod(cfg, run, copy_store(template, run / "models"), "pod").start())
        nginx = s.add(Nginx(run, [api.address], values=NGINX_NO_RATE_LIMIT).start())
        load = s.add(Load(nginx.url, run / "load", cfg, cfg.seconds + 120).start())
        while time.time() < load.ready_at + cfg.seconds:
            nginx.reload(upstreams=[api.address])
            reloads += 1
            time.sleep(0.3)
        result = load.finish(tail=1.0)
    finally:
        s.close()
    row = result.row(f"{reloads} nginx reloads, clients {load.connection} (nginx)")
    row.notes = f"{reloads} reloads of an unchanged config, nothing else happens"
    return row


def canary_share(pod: Gunicorn, version: str, percent: float | None) -> Callable[[], bool]:
    """Every live worker of ``pod`` sends ``percent`` to canary ``version`` (None: no canary)."""

    def check() -> bool:
        live = pod.worker_pids()
        shares: dict[int, float] = {}
        for name, labels, value in scrape(pod.url):
            if (
                name == "predictor_canary_percent"
                and labels.get("model") == MODEL
                and labels.get("version") == version
            ):
                shares[int(labels["pid"])] = value
        want = percent or 0.0
        return bool(live) and all(shares.get(pid, 0.0) == want for pid in live)

    return check


def check_share(
    row: Row, result: LoadResult, version: str, low: float, high: float, after: float,
    before: float, what: str,
) -> float:  # fmt: skip
    seen = result.versions(after, before)
    total = sum(seen.values())
    share = seen.get(version, 0) / total if total else 0.0
    if not total:
        row.problems.append(f"{what}: no answer at all")
    elif not low <= share <= high:
        row.problems.append(f"{what}: {share:.0%} from {version}, expected {low:.0%}-{high:.0%}")
    if set(seen) - {GOOD, NEW}:
        row.problems.append(f"{what}: answers from {sorted(set(seen) - {GOOD, NEW})}")
    return share


def scenario_canary(cfg: Config, template: Path, run: Path) -> Row:
    """Canary start (30%), change of share (70%), off, start again (50%), promote."""
    s = Servers()
    try:
        redis, api, load = redis_pod_under_load(s, cfg, template, run)
        store = str(api.store)
        marks: dict[str, float] = {}
        hold = max(2.0, cfg.seconds * 0.1)  # each share serves this long before the next step

        def step(at: float, name: str, converged: Callable[[], bool], *args: str) -> None:
            load.at(at)
            time.sleep(max(0.0, marks.get("last", 0.0) + hold - time.time()))
            marks[name] = time.time()
            done = predictor_cli(*args, "--store", store, redis_url=redis.url)
            marks[name + "-converged"] = wait_for(converged, 15, f"{name}: every worker")
            marks[name + "-took"] = marks[name + "-converged"] - done
            marks["last"] = marks[name + "-converged"]

        step(0.15, "start", canary_share(api, NEW, 30), "canary", MODEL, NEW, "--percent", "30")
        step(0.35, "share", canary_share(api, NEW, 70), "canary", MODEL, NEW, "--percent", "70")
        step(0.55, "off", canary_share(api, NEW, None), "canary", MODEL, "--off")
        step(0.7, "again", canary_share(api, NEW, 50), "canary", MODEL, NEW, "--percent", "50")
        step(0.85, "promote", all_serve(api, NEW), "promote", MODEL, NEW)
        result = load.finish()
    finally:
        s.close()
    row = result.row("canary 30% -> 70% -> off -> 50% -> promote (gunicorn, 2 workers)")
    row.converge_s = max(v for k, v in marks.items() if k.endswith("-took"))
    result.stopped_at = max(result.stopped_at, marks["last"])
    check_versions(row, result, GOOD, 0, marks["start"], "before the canary")
    at30 = check_share(row, result, NEW, 0.15, 0.45, marks["start-converged"], marks["share"],
                       "at 30%")  # fmt: skip
    at70 = check_share(row, result, NEW, 0.55, 0.85, marks["share-converged"], marks["off"],
                       "at 70%")  # fmt: skip
    check_versions(row, result, GOOD, marks["off-converged"], marks["again"], "after --off")
    check_versions(row, result, NEW, marks["promote-converged"], float("inf"), "after promote")
    row.notes = (
        f"{NEW} answered {at30:.0%} at 30% and {at70:.0%} at 70%; only {GOOD} after --off, "
        f"only {NEW} after promote; each step on every worker within {row.converge_s:.2f}s"
    )
    return row


SCENARIOS: dict[str, Callable[[Config, Path, Path], Row]] = {
    "promotion": scenario_promotion,
    "refusal": scenario_refusal,
    "sigterm": scenario_sigterm,
    "rehearsal": scenario_rehearsal,
    "recycling": scenario_recycling,
    "canary": scenario_canary,
}
# Run only when named in --only: a measurement of nginx itself, not of a rollout.
EXTRA_SCENARIOS: dict[str, Callable[[Config, Path, Path], Row]] = {
    "nginx-reloads": scenario_nginx_reloads,
}


def run_scenario(name: str, cfg: Config, template: Path) -> Row:
    """Run one scenario in its own directory under ``cfg.run_dir``; errors become problems."""
    run = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cfg.run_dir))
    started = time.monotonic()
    try:
        row = {**SCENARIOS, **EXTRA_SCENARIOS}[name](cfg, template, run)
    except StackError as exc:
        row = Row(name, problems=[f"{type(exc).__name__}: {exc}"])
    verdict = "passed" if row.passed else "FAILED"
    cfg.log(f"  {name}: {verdict} in {time.monotonic() - started:.1f}s")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.load_scenarios", description=__doc__)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--users", type=int, default=50, help="Locust users (default 50)")
    parser.add_argument("--seconds", type=float, default=60, help="load per scenario (60)")
    parser.add_argument("--drain-seconds", type=float, default=2.0, help="pods' drain (2)")
    parser.add_argument("--think-ms", type=float, default=0.0, help="pause per user (0)")
    parser.add_argument(
        "--connection",
        choices=("keep-alive", "close"),
        help="client connections in every scenario (default: keep-alive, rehearsal: close)",
    )
    parser.add_argument("--run-dir", type=Path, help="keep every log here (default: a temp dir)")
    parser.add_argument("--table-file", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    known = [*SCENARIOS, *EXTRA_SCENARIOS]
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(known)}")

    keep = args.run_dir is not None
    run_dir = (args.run_dir or Path(tempfile.mkdtemp(prefix="zero-downtime-"))).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = Config(
        users=args.users, seconds=args.seconds, drain_seconds=args.drain_seconds,
        think_ms=args.think_ms, connection=args.connection, run_dir=run_dir,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    cfg.log(f"zero-downtime scenarios, {cfg.users} users, {cfg.seconds:g}s each, in {run_dir}")
    template = build_store(run_dir / "store-template")
    rows = [run_scenario(name, cfg, template) for name in names]
    text = table(rows)
    print(text)
    if args.table_file:
        args.table_file.write_text(text + "\n")
    if not keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        cfg.log(f"logs kept in {run_dir}")
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
