"""Faults and abuse under load: what breaks, what is lost, how fast it comes back.

    python -m tools.chaos                  # make chaos: the full form (~5 minutes)
    python -m tools.chaos --short          # what tests/deploy/test_chaos.py runs (~1.5 minutes)
    python -m tools.chaos --only redis,promote --keep-run-dir run/chaos

The stack, every server on a free loopback port: redis-server; two gunicorn
instances ("pods", 2 sync workers each, one model store, one Redis, signing key
set) behind nginx from the repo's own template; and, for the access-control row,
a third pod with API keys and an admin token behind its own nginx. One Locust
process (``tools.load_scenarios.Load``, ``loadtests/zero_downtime_locustfile.py``)
sends well-formed predictions through nginx for the whole run. Faults follow one
another; each owns the time from its start to the next one's, so every request
Locust made is counted in exactly one row: the row's requests, failures and p99
are the load's during that fault. "seconds to recover" is fault-specific and said
in each row. The abuse rows send their own traffic next to the load and say what
it got; the load's columns show it did not hurt anyone else.

A row fails (and the exit status is 1) when any well-formed request failed or got
a 5xx, or when the fault's own checks fail. Nothing here is imported by Locust or
imports it: Locust runs as its own process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from service.worker import STOP_FILE_ENV, StopPoints
from tools.attacks import WritesMarker, cut_short_and_resign, flip_a_byte
from tools.load_scenarios import (
    Answer,
    Load,
    all_serve,
    load_failures,
    predictor_cli,
    scrape,
)
from tools.load_scenarios import Config as LoadConfig
from tools.scenarios_config import CHAOS_BAD_VERSIONS as BAD_VERSIONS
from tools.scenarios_config import CHAOS_SIGNING_KEY as SIGNING_KEY
from tools.scenarios_config import (
    GOOD,
    IRIS_ROW,
    MODEL,
    NGINX_NO_RATE_LIMIT,
    STORE_WRITER_VERSIONS,
    markdown_table,
    percentile,
    verdict,
)
from tools.scenarios_config import wait_for as poll
from tools.stack import (
    REPO,
    VENV_BIN,
    Gunicorn,
    Nginx,
    RedisServer,
    StackError,
    http_status,
    pid_alive,
)

PREDICTOR = VENV_BIN / "predictor"
SCHEMATHESIS = VENV_BIN / "schemathesis"


# The flood row's per-key nginx limit: low, so most of a flood is refused at any speed.
FLOOD_KEY_RATE = 1
FLOOD_KEY_BURST = 5


@dataclass
class Config:
    users: int = 40
    poison_rounds: int = 40  # redis-poison: fresh rows asked, poisoned, asked again
    baseline_s: float = 8.0
    redis_outage_s: float = 4.0
    pause_s: float = 2.0  # CLIENT PAUSE
    drain_s: float = 2.0  # PREDICTOR_DRAIN_SECONDS of the pods
    graceful_timeout: int = 10
    settle_s: float = 1.0  # after a fault has recovered, before the next one
    redis_retry_s: float = 2.0  # PREDICTOR_REDIS_RETRY_SECONDS (the default)
    schemathesis_examples: int = 10
    # Bounded by count (examples per operation and phase); the time limit only stops a hang.
    schemathesis_max_time: int = 900
    # "coverage" alone sends ~700 boundary-case requests: the full form only.
    schemathesis_phases: str = "examples,coverage,fuzzing,stateful"
    flood_requests: int = 600
    slow_clients: int = 60
    body_timeout_s: int = 2  # nginx client_body_timeout here (10 s by default)
    p99_slack_ms: float = 250.0  # a Redis fault may add this much to the baseline p99,
    p99_ratio: float = 2.5  # or this factor of it, on a machine loaded enough to need it
    only: tuple[str, ...] = ()
    run_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    log: Callable[[str], None] = print


SHORT = {
    "users": 20, "baseline_s": 2.0, "redis_outage_s": 1.5, "drain_s": 1.0, "settle_s": 0.3,
    "schemathesis_examples": 2, "schemathesis_max_time": 300,
    "schemathesis_phases": "examples,fuzzing", "flood_requests": 200,
    "slow_clients": 20, "poison_rounds": 12,
}  # fmt: skip

# What an attacker with Redis access writes over cached answers (service/cache.py
# EntryCheck must turn each into a miss): garbage, wrong shapes, labels that are not
# classes, probabilities that are not probabilities.
POISON = (
    b"\x00\xffgarbage",
    b"[]",
    b'{"prediction": "virginica"}',
    b'["not-a-class", null]',
    b"[99, null]",
    b"[2, [0.5, 0.5]]",
    b"[2, [0.9, 0.9, 0.9]]",
    b"[2, [NaN, 0.5, 0.5]]",
    b"[[2], null]",
)


# --------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------


@dataclass
class Row:
    key: str
    fault: str
    start: float = 0.0
    end: float = float("inf")
    requests: int = 0
    failed: int = 0
    p99_ms: float = 0.0
    recover_s: float | None = None
    recover_what: str = ""
    notes: str = ""
    problems: list[str] = field(default_factory=list)
    bounded_p99: bool = False  # p99 must stay within baseline + slack
    figures: dict[str, Any] = field(default_factory=dict)  # for tests

    @property
    def passed(self) -> bool:
        return not self.problems


TABLE_HEADER = (
    "| fault | requests | failed | p99 ms | seconds to recover | what happened |\n"
    "|---|---:|---:|---:|---:|---|"
)


def table_row(row: Row) -> str:
    recover = "—" if row.recover_s is None else f"{row.recover_s:.2f}"
    if row.recover_what and row.recover_s is not None:
        recover += f" ({row.recover_what})"
    return (
        f"| {row.fault} | {row.requests} | {row.failed} | {row.p99_ms:.0f} | {recover} "
        f"| {verdict(row.notes, row.problems)} |"
    )


def table(rows: list[Row]) -> str:
    return markdown_table(TABLE_HEADER, (table_row(r) for r in rows))


# --------------------------------------------------------------------------
# the model store, with the bad versions
# --------------------------------------------------------------------------


def build_store(root: Path, marker: Path) -> None:
    """iris 1 (signed, compiled, current) and the four bad versions of BAD_VERSIONS."""
    import skops.io as sio
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from service.manifest import Feature, Manifest
    from service.publish import publish_estimator
    from service.signing import file_sha256, sign, version_files
    from service.store import ModelStore

    key = SIGNING_KEY.encode()
    store = ModelStore(root)
    iris = load_iris()
    features = [Feature(name=n) for n in iris.feature_names]

    def fitted() -> Any:
        return LogisticRegression(max_iter=1000).fit(iris.data, iris.target)

    def publish(version: str, compile_graph: bool) -> tuple[Path, Manifest]:
        publish_estimator(
            store, fitted(), name=MODEL, version=version, features=features,
            output_labels=[str(n) for n in iris.target_names],
            sample_input=iris.data[:2].tolist(), signing_key=key, compile_graph=compile_graph,
        )  # fmt: skip
        directory = store.version_dir(MODEL, version)
        return directory, Manifest.read(directory)

    def resign(directory: Path, manifest: Manifest) -> None:
        # As a publisher would: the files' digests as they are now, then the signature.
        manifest.files = version_files(directory)
        manifest.signature = sign(key, manifest.signed_fields())
        manifest.write(directory)

    _, good = publish(GOOD, compile_graph=True)
    store.promote(MODEL, GOOD)
    # Compiled graphs are left out of the bad versions, so the artifact itself is loaded.
    cut_short_and_resign(publish("corrupt", compile_graph=False)[0], key)
    flip_a_byte(publish("tampered", compile_graph=False)[0])

    # Written straight into the store, as an attacker with write access would; unsigned.
    directory = store.version_dir(MODEL, "pickle")
    directory.mkdir()
    (directory / "model.joblib").write_bytes(pickle.dumps(WritesMarker(marker)))
    good.model_copy(
        update={
            "version": "pickle", "format": "joblib", "artifact": "model.joblib",
            "sha256": file_sha256(directory / "model.joblib"), "signature": None,
            "trusted_types": [], "compiled": None, "files": version_files(directory),
        }
    ).write(directory)  # fmt: skip

    # A publisher who vouched for a dangerous type: signed, digest right, still refused.
    directory = store.version_dir(MODEL, "skops-os-system")
    directory.mkdir()
    hostile = Pipeline([("f", FunctionTransformer(func=os.system)), ("m", fitted())])
    sio.dump(hostile, directory / "model.skops")
    manifest = good.model_copy(
        update={
            "version": "skops-os-system", "format": "skops", "artifact": "model.skops",
            "sha256": file_sha256(directory / "model.skops"), "compiled": None,
            "trusted_types": sorted(sio.get_untrusted_types(file=directory / "model.skops")),
        }
    )  # fmt: skip
    resign(directory, manifest)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


class AccessLogTail:
    """Reads nginx's JSON access log as it grows; each entry stamped with when it was seen."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> AccessLogTail:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        offset, partial = 0, b""
        while not self._stop.is_set():
            with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
                offset += len(chunk)
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                now = time.time()
                for line in lines:
                    if line.strip():
                        self.entries.append((now, json.loads(line)))
            self._stop.wait(0.05)

    def between(self, start: float, end: float = float("inf")) -> list[dict[str, Any]]:
        return [e for t, e in list(self.entries) if start <= t < end]

    def first(self, after: float, match: Callable[[dict[str, Any]], bool]) -> float | None:
        return next((t for t, e in list(self.entries) if t >= after and match(e)), None)


def metric_sum(url: str, name: str, **labels: str) -> float:
    return sum(
        v
        for n, lab, v in scrape(url)
        if n == name and all(lab.get(k) == want for k, want in labels.items())
    )


def json_error(response: requests.Response, status: int, code: str | None = None) -> str | None:
    """None when ``response`` is a JSON error with that status (and code), else what it is."""
    if response.status_code != status:
        return f"HTTP {response.status_code} instead of {status}: {response.text[:120]}"
    if not response.headers.get("Content-Type", "").startswith("application/json"):
        return f"{status} is not JSON ({response.headers.get('Content-Type')})"
    error = response.json().get("error")
    if code is not None and (not isinstance(error, dict) or error.get("code") != code):
        return f"{status} with error {error!r}, expected code {code}"
    return None


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTOR_")}
    return subprocess.run(
        [str(PREDICTOR), *args], capture_output=True, text=True, timeout=120,
        env={**base, **(env or {})}, cwd=REPO,
    )  # fmt: skip


class TmpfsMount:
    """A small tmpfs at ``path`` (root only), made full or read-only on demand."""

    def __init__(self, path: Path, size: str = "1m") -> None:
        self.path, self.size = path, size
        self.mounted = False

    def _mount(self, *args: str) -> None:
        result = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise StackError(f"mount {' '.join(args)}: {result.stderr.strip()}")

    def mount(self) -> TmpfsMount:
        if os.geteuid() != 0:
            raise StackError("a full or read-only model store needs root (mount -t tmpfs)")
        self.path.mkdir(parents=True, exist_ok=True)
        self._mount("-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path))
        self.mounted = True
        return self

    def read_only(self, on: bool) -> None:
        self._mount("-o", f"remount,{'ro' if on else 'rw'}", str(self.path))

    @contextlib.contextmanager
    def full(self, leave_bytes: int = 8192) -> Iterator[None]:
        """Fill the filesystem, then free ``leave_bytes``: a write that starts and cannot end."""
        filler = self.path / ".filler"
        with open(filler, "wb", buffering=0) as fh:  # unbuffered: no failing flush at close
            for size in (1 << 16, 4096, 512):
                try:
                    while True:
                        fh.write(b"\0" * size)
                        fh.flush()
                except OSError:
                    pass
            fh.truncate(max(0, fh.tell() - leave_bytes))
        try:
            yield
        finally:
            filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if not self.mounted:
            return
        result = subprocess.run(["umount", str(self.path)], capture_output=True, timeout=30)
        if result.returncode != 0:  # still busy: detach it now, it goes once unused
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)
        self.mounted = False


class DirectClients:
    """A few threads posting predictions straight to one gunicorn (no nginx to retry)."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url + "/predict"
        self.threads = threads
        self.results: list[str | None] = []  # None = good, else the error
        self._stop = threading.Event()
        self._pool: list[threading.Thread] = []

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    r = session.post(self.url, json={"input": IRIS_ROW}, timeout=10)
                    self.results.append(None if r.status_code == 200 else f"HTTP {r.status_code}")
                except requests.RequestException as exc:
                    self.results.append(type(exc).__name__)

    def __enter__(self) -> DirectClients:
        self._pool = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for t in self._pool:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._pool:
            t.join(15)


def _socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` has open."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
    return inodes


def _established_tcp(port: int) -> dict[int, tuple[int, int]]:
    """inode -> (local port, remote port) of the established IPv4 connections with ``port``
    at one end (from /proc/net/tcp)."""
    out = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "01":  # ESTABLISHED
            continue
        local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
        if port in (local, remote):
            out[int(fields[9])] = (local, remote)
    return out


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------


class Chaos:
    """One stack, one Locust run, the faults one after another."""

    def __init__(self, cfg: Config, run: Path, cleanup: contextlib.ExitStack) -> None:
        self.cfg, self.run, self.cleanup = cfg, run, cleanup
        self.rows: list[Row] = []
        self.problems: list[str] = []  # about the run as a whole
        # Row key -> a check over that row's load answers, run once Locust has finished.
        self.answer_checks: dict[str, Callable[[Row, list[Answer]], None]] = {}
        self.marker = run / "pickle-ran-a-command"
        self.store_writer_marker = run / "store-writer-code-ran"
        self.api_keys = {"alice": secrets.token_urlsafe(32)}
        self.admin_token = secrets.token_urlsafe(32)

    # --- setup ---------------------------------------------------------------
    def _stop_later(self, server: Any) -> Any:
        self.cleanup.callback(server.stop)
        return server

    def setup(self) -> None:
        cfg, run = self.cfg, self.run
        template = run / "store-template"
        build_store(template, self.marker)
        self.template = template
        self.store = run / "models"
        (self.store / MODEL).mkdir(parents=True)
        # The served model's directory is a tmpfs, so publishing into it can run out of
        # space or meet a read-only filesystem (root ignores permissions).
        self.fs = TmpfsMount(self.store / MODEL).mount()
        self.cleanup.callback(self.fs.unmount)
        # Version 1 only: each bad version is written in just before its promotion and
        # removed after it (an operator cleaning up), so the other rows never meet it.
        for name in (GOOD, "current", "history"):
            source = template / MODEL / name
            copy = shutil.copytree if source.is_dir() else shutil.copy2
            copy(source, self.store / MODEL / name)

        self.redis = self._stop_later(RedisServer(run).start())
        env = {
            "PREDICTOR_SIGNING_KEY": SIGNING_KEY,
            "PREDICTOR_DRAIN_SECONDS": str(cfg.drain_s),
            "PREDICTOR_GRACEFUL_TIMEOUT": str(cfg.graceful_timeout),
            "PREDICTOR_REDIS_RETRY_SECONDS": str(cfg.redis_retry_s),
            # iris is cheaper than a Redis round trip, so by default only the per-worker LRU
            # would cache it: share every answer through Redis, or the Redis rows test nothing.
            "PREDICTOR_CACHE_SHARED_MIN_US": "0",
            "PREDICTOR_LOG_LEVEL": "info",
        }
        # The worker-kill row stops a worker at a chosen point of a request (test only).
        self.stops = StopPoints(run / "stop-point")
        self.pods = [
            Gunicorn(run, self.store, name=f"pod-{n}", workers=2, redis_url=self.redis.url,
                     env={**env, STOP_FILE_ENV: str(self.stops.path)}, inherit_settings=False)
            for n in "ab"
        ]  # fmt: skip
        keyed_store = run / "models-keyed"
        shutil.copytree(self.store, keyed_store)
        secrets_dir = run / "secrets"
        secrets_dir.mkdir(mode=0o700)
        from service.auth import hash_key

        (secrets_dir / "api-keys").write_text(
            "".join(f"{i}:{hash_key(k)}\n" for i, k in self.api_keys.items())
        )
        (secrets_dir / "admin-token").write_text(self.admin_token)
        self.keyed = Gunicorn(
            run, keyed_store, name="pod-keyed", workers=1, inherit_settings=False,
            env={**env, "PREDICTOR_API_KEYS_FILE": str(secrets_dir / "api-keys"),
                 "PREDICTOR_ADMIN_TOKEN_FILE": str(secrets_dir / "admin-token")},
        )  # fmt: skip
        for pod in (*self.pods, self.keyed):
            self.cleanup.callback(pod.stop)
        with ThreadPoolExecutor(3) as pool:  # each boot imports scikit-learn: overlap them
            for future in [pool.submit(p.start) for p in (*self.pods, self.keyed)]:
                future.result()

        values = {
            # Every Locust user comes from 127.0.0.1: lift the per-address limit here.
            **NGINX_NO_RATE_LIMIT,
            # The flood row sends a key: its budget is small, so that however slowly this
            # machine sends the flood, most of it is over the limit (see abuse_flood).
            "NGINX_KEY_RATE_LIMIT": f"{FLOOD_KEY_RATE}r/s",
            "NGINX_KEY_RATE_BURST": FLOOD_KEY_BURST,
            "NGINX_CLIENT_BODY_TIMEOUT": f"{cfg.body_timeout_s}s",
        }  # fmt: skip
        self.nginx = self._stop_later(
            Nginx(run, [p.address for p in self.pods], values=values).start()
        )
        self.keyed_nginx = self._stop_later(
            Nginx(run, [self.keyed.address], name="nginx-keyed").start()
        )
        self.access = AccessLogTail(self.nginx.access_log).start()
        self.cleanup.callback(self.access.stop)

    # --- faults ----------------------------------------------------------------
    def faults(self) -> list[tuple[str, str, Callable[[Row], None]]]:
        promote = [
            (f"promote-{v}", f"promoted under load: {what}", self._promote_bad(v))
            for v, (what, _) in BAD_VERSIONS.items()
        ]
        return [
            ("baseline", "baseline: no fault", self.baseline),
            ("redis-kill", "Redis killed (SIGKILL), restarted", self.redis_kill),
            ("redis-pause", f"Redis paused (CLIENT PAUSE {self.cfg.pause_s:g} s)",
             self.redis_pause),
            ("redis-poison", "Redis entries poisoned and garbage", self.redis_poison),
            ("worker-kill", "gunicorn workers SIGKILLed mid-request", self.worker_kill),
            ("master-restart", "gunicorn master SIGTERM, then started again", self.master_restart),
            ("store-writer", "a store writer drops attack versions in and promotes them",
             self.store_writer),
            *promote,
            ("publish-full", "`predictor publish` into a full model store", self.publish_full),
            ("publish-readonly", "`predictor publish` into a read-only model store",
             self.publish_readonly),
            ("abuse-schemathesis", "schemathesis through nginx", self.abuse_schemathesis),
            ("abuse-10mb", "a 10 MB body", self.abuse_big_body),
            ("abuse-million-rows", "a million rows (chunked)", self.abuse_million_rows),
            ("abuse-rows", "1001 rows (under the body limit)", self.abuse_rows),
            ("abuse-nested", "deeply nested JSON", self.abuse_nested),
            ("abuse-slow-body", "slow bodies (slowloris)", self.abuse_slow_body),
            ("abuse-flood", "a flood with one API key", self.abuse_flood),
            ("abuse-keys", "no key, a wrong key, the admin routes", self.abuse_access_control),
            ("abuse-metrics", "/metrics from the public port", self.abuse_metrics),
        ]  # fmt: skip

    def selected(self) -> list[tuple[str, str, Callable[[Row], None]]]:
        only = self.cfg.only
        return [
            f for f in self.faults()
            if f[0] == "baseline" or not only or any(f[0].startswith(o) for o in only)
            or any(f[0].startswith(f"abuse-{o}") for o in only)
        ]  # fmt: skip

    def execute(self) -> None:
        cfg = self.cfg
        out = self.run / "load"
        load_cfg = LoadConfig(users=cfg.users, seconds=0.0)
        load = Load(self.nginx.url, out, load_cfg, max_seconds=3600)
        self.cleanup.callback(load.kill)
        load.start()
        mark = 0.0  # the first row also owns the answers sent before Locust was ready
        for key, title, fault in self.selected():
            row = Row(key, title, start=mark)
            started = time.monotonic()
            try:
                fault(row)
                # The next fault starts with every pod back in nginx's rotation: a pod nginx
                # marked failed (max_fails=1) sits out its fail_timeout (5 s).
                self.rotation(self.pods, time.time())
            except (
                StackError,
                OSError,
                requests.RequestException,
                subprocess.SubprocessError,
            ) as e:
                row.problems.append(f"{type(e).__name__}: {e}")
            time.sleep(cfg.settle_s)
            row.end = mark = time.time()
            self.rows.append(row)
            verdict = "ok" if row.passed else "FAILED: " + "; ".join(row.problems)
            cfg.log(f"  {key}: {time.monotonic() - started:.1f}s, {verdict}")
        self.rows[-1].end = float("inf")  # and the last one the answers after it
        result = load.finish(tail=1.0)
        self._account(result.answers, result.totals)

    def _account(self, answers: list[Answer], totals: dict[str, int]) -> None:
        for row in self.rows:
            mine = [a for a in answers if row.start <= a.start < row.end]
            row.requests = len(mine)
            row.failed = sum(1 for a in mine if a.error is not None)
            row.p99_ms = percentile([a.ms for a in mine], 0.99)
            if row.key in self.answer_checks:  # a row that checks what clients saw when
                self.answer_checks[row.key](row, mine)
            if not mine:
                row.problems.append("no load request fell in this fault's time")
            if row.failed:
                common = Counter(a.error for a in mine if a.error).most_common(3)
                row.problems.append(
                    f"{row.failed} well-formed requests failed: "
                    + ", ".join(f"{n}x {e}" for e, n in common)
                )
        baseline = next((r for r in self.rows if r.key == "baseline"), None)
        for row in self.rows:
            if row.bounded_p99 and baseline is not None:
                # A ratio in the same run as well as the slack: on a loaded machine the
                # baseline itself is slow and a fixed slack would measure the machine.
                slack, ratio = self.cfg.p99_slack_ms, self.cfg.p99_ratio
                bound = max(baseline.p99_ms + slack, baseline.p99_ms * ratio)
                if row.p99_ms > bound:
                    row.problems.append(f"p99 {row.p99_ms:.0f} ms above {bound:.0f} ms")
                row.notes += f"; p99 within baseline + {slack:.0f} ms or {ratio:g}x baseline"
        if totals.get("num_requests") != len(answers) or totals.get("num_failures") != sum(
            1 for a in answers if a.error
        ):
            self.problems.append(f"Locust counted {totals}, the recording {len(answers)}")
        if self.marker.exists():
            self.problems.append("the hostile pickle ran its command")

    def rotation(self, pods: list[Gunicorn], since: float, timeout: float = 20.0) -> float:
        """When every pod has answered nginx a request sent after ``since`` (+0.3 s, past
        the requests in flight then)."""
        after = since + 0.3

        def seen(pod: Gunicorn) -> float | None:
            return self.access.first(after, lambda e: e["upstream_addr"] == pod.address)

        poll(lambda: all(seen(p) is not None for p in pods), timeout, "every pod in rotation")
        return max(seen(p) or 0.0 for p in pods)

    # --- Redis ----------------------------------------------------------------
    def invalid_cache_values(self) -> float:
        return sum(metric_sum(p.url, "predictor_cache_invalid_total") for p in self.pods)

    def redis_poison(self, row: Row) -> None:
        """Fresh rows asked once (the model's answer, now in Redis), every cached iris key
        overwritten with poison, the rows asked again: the same answers, never a failure."""
        import random

        import redis

        client = redis.Redis(host="127.0.0.1", port=self.redis.port, socket_timeout=2)
        rng = random.Random(15)
        invalid_before = self.invalid_cache_values()
        wrong = poisoned = 0
        try:
            for n in range(self.cfg.poison_rounds):
                rows = [[round(rng.uniform(4, 8), 3), round(rng.uniform(2, 4.5), 3),
                         round(rng.uniform(1, 7), 3), round(rng.uniform(0.1, 2.5), 3)]
                        for _ in range(4)]  # fmt: skip
                body = {"instances": rows, "probabilities": n % 2 == 1}
                url = self.nginx.url + f"/v1/models/{MODEL}:predict"
                truth = requests.post(url, json=body, timeout=10)
                if truth.status_code != 200:
                    row.problems.append(f"round {n}: the model answered {truth.status_code}")
                    continue
                value = POISON[n % len(POISON)]
                pipe = client.pipeline(transaction=False)
                for key in client.scan_iter(match=f"p:{MODEL}:*", count=1000):
                    pipe.set(key, value)
                    poisoned += 1
                pipe.execute()
                for _ in range(3):  # whichever pod and worker answers
                    again = requests.post(url, json=body, timeout=10)
                    if again.status_code != 200 or again.json() != truth.json():
                        wrong += 1
        finally:
            client.close()
        invalid = self.invalid_cache_values() - invalid_before
        row.figures.update(wrong=wrong, poisoned=poisoned, invalid=invalid)
        if wrong:
            row.problems.append(f"{wrong} answers differed from the model's after poisoning")
        if invalid <= 0:
            row.problems.append("no worker met a poisoned entry: the row tested nothing")
        row.notes = (
            f"{poisoned} entries overwritten over {self.cfg.poison_rounds} rounds with "
            f"{len(POISON)} kinds of poison; {invalid:.0f} refused "
            f"(predictor_cache_invalid_total) and answered from the model; "
            f"{wrong} answers differed from the model's"
        )

    def cache_errors(self) -> float:
        return sum(
            metric_sum(p.url, "predictor_cache_errors_total", backend="redis") for p in self.pods
        )

    def wait_cache_back(self, since: float, timeout: float = 30.0) -> tuple[float, float]:
        """Until no worker has counted a Redis error for longer than the breaker's retry
        period: (when the last one was counted, or ``since``; errors counted since then)."""
        quiet = self.cfg.redis_retry_s + 0.5
        first = last_value = self.cache_errors()
        last_change = since
        deadline = time.monotonic() + timeout
        while time.time() - last_change < quiet:
            if time.monotonic() > deadline:
                raise StackError(f"workers still count Redis errors {timeout:g}s later")
            time.sleep(0.1)
            value = self.cache_errors()
            if value != last_value:
                last_value, last_change = value, time.time()
        return last_change, last_value - first

    def redis_cache_calls(self) -> int:
        """MGET calls the (restarted) Redis has answered: the workers' cache lookups."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.redis.port, socket_timeout=2)
        try:
            return int(client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0))
        finally:
            client.close()

    def baseline(self, row: Row) -> None:
        time.sleep(self.cfg.baseline_s)
        row.notes = "the reference p99 for the Redis rows"

    def redis_kill(self, row: Row) -> None:
        errors_before = self.cache_errors()
        if self.redis_cache_calls() == 0:
            raise StackError("no worker caches through Redis: the fault would test nothing")
        self.redis.kill()
        time.sleep(self.cfg.redis_outage_s)
        restarted = time.time()
        self.redis.restart()
        back, _ = self.wait_cache_back(restarted)
        row.recover_s, row.recover_what = max(0.0, back - restarted), "after the restart"
        row.bounded_p99 = True
        answered = self.cache_errors() - errors_before
        if answered <= 0:
            row.problems.append("no worker noticed Redis was gone")
        try:
            poll(lambda: self.redis_cache_calls() > 0, 5, "a cache lookup in the new Redis")
        except StackError as exc:
            row.problems.append(f"{exc} ({self.redis_cache_calls()} MGET calls)")
        row.notes = (
            f"down {self.cfg.redis_outage_s:g} s; {answered:.0f} cache calls skipped or failed "
            f"(predictor_cache_errors_total), every request answered from the model; every "
            f"worker back on Redis (circuit breaker, retry {self.cfg.redis_retry_s:g} s)"
        )

    def redis_pause(self, row: Row) -> None:
        errors_before = self.cache_errors()
        self.redis.pause(self.cfg.pause_s)
        ends = time.time() + self.cfg.pause_s
        time.sleep(self.cfg.pause_s)
        back, _ = self.wait_cache_back(ends)
        row.recover_s, row.recover_what = max(0.0, back - ends), "after the pause"
        row.bounded_p99 = True
        if self.cache_errors() - errors_before <= 0:
            row.problems.append("no worker noticed the pause")
        row.notes = (
            f"a Redis call waits at most its 20 ms timeout, then the breaker skips Redis "
            f"({self.cache_errors() - errors_before:.0f} cache calls skipped or timed out)"
        )

    # --- gunicorn -------------------------------------------------------------
    def _holds_direct_request(self, pod: Gunicorn, worker: int) -> bool:
        """Whether ``worker`` (stopped) holds a connection from this process (DirectClients)."""
        table = _established_tcp(pod.port)
        held = {table[i][1] for i in _socket_inodes(worker) if i in table}
        ours = {table[i][0] for i in _socket_inodes(os.getpid()) if i in table}
        return bool(held & ours)

    def _replaced(self, pod: Gunicorn, victim: int) -> float:
        return poll(
            lambda: len(pod.worker_pids()) >= 2
            and victim not in pod.worker_pids()
            and all_serve(pod, GOOD)(),
            20, "the killed worker replaced and serving",
        )  # fmt: skip

    # Points of a request's life a worker is killed at (service/worker.py stop points),
    # what that means, and whether nginx must retry it on the other pod.
    KILL_POINTS = (
        ("read", "headers parsed, body unread", True),
        ("predict", "body read, answer not built", True),
        ("write", "answer built, not yet sent", True),
        ("written", "answer handed to the kernel", False),
    )

    def _kill_at(
        self,
        point: str,
        wanted: Callable[[Gunicorn, int], bool] | None = None,
        timeout: float = 30.0,
    ) -> tuple[Gunicorn, int, float]:
        """Arm ``point`` on both pods, wait for a request to stop a worker there, SIGKILL
        it: (its pod, its PID, when). A stopped worker ``wanted`` refuses is let go
        (SIGCONT: its request goes on unharmed) and the point armed again."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.stops.arm(point)
                poll(lambda: self.stops.stopped_worker() is not None,
                     max(0.1, deadline - time.monotonic()), f"a worker stopped at {point!r}",
                     0.005)  # fmt: skip
                victim = self.stops.stopped_worker()
                assert victim is not None
                pod = next(p for p in self.pods if victim in p.worker_pids())
                if wanted is None or wanted(pod, victim):
                    os.kill(victim, signal.SIGKILL)
                    return pod, victim, time.time()
                self.stops.clear()
                os.kill(victim, signal.SIGCONT)
        finally:
            self.stops.clear()

    def worker_kill(self, row: Row) -> None:
        pod = self.pods[1]
        with DirectClients(pod.url) as direct:
            time.sleep(0.3)
            # 1: a worker holding a request of a client that calls gunicorn directly.
            _, first, _ = self._kill_at(
                "predict", lambda p, w: p is pod and self._holds_direct_request(p, w)
            )
            self._replaced(pod, first)
            time.sleep(0.3)
            lost = Counter(r for r in direct.results if r)
            direct_seen = len(direct.results)
        n_lost = sum(lost.values())
        if n_lost > 1:
            row.problems.append(f"{n_lost} direct requests failed ({dict(lost)}), expected <= 1")

        # 2: workers holding a load request through nginx, killed at each point of its life.
        kills: dict[str, dict[str, Any]] = {}
        started = time.time()
        for point, _, retried_expected in self.KILL_POINTS:
            victim_pod, victim, killed = self._kill_at(point)
            other = next(p for p in self.pods if p is not victim_pod)
            replaced = self._replaced(victim_pod, victim)
            back = self.rotation([victim_pod], replaced)
            time.sleep(0.2)  # the last lines of the access log
            around = [
                e for e in self.access.between(killed - 1.0, back)
                if e["upstream_addr"].startswith(victim_pod.address)
            ]  # fmt: skip
            retried = [
                e for e in around
                if e["upstream_addr"] == f"{victim_pod.address}, {other.address}"
            ]  # fmt: skip
            bad = [e for e in around if e["status"] != 200 or e.get("truncated") != "false"]
            kills[point] = {
                "pid": victim, "pod": victim_pod.name, "killed": killed,
                "retried": len(retried),
                "retried_status": sorted({e["upstream_status"] for e in retried}),
                "logged": len(around), "bad_log": len(bad), "replaced_s": replaced - killed,
                "back_s": back - killed,
            }  # fmt: skip
            if retried_expected and not retried:
                row.problems.append(f"{point}: nginx logged no retry of the killed request")
            if not retried_expected and retried:
                row.problems.append(f"{point}: nginx retried {len(retried)} answered requests")
            if bad:
                row.problems.append(
                    f"{point}: {len(bad)} access-log lines of {victim_pod.name} not a whole 200: "
                    + "; ".join(f"{e['status']} truncated={e.get('truncated')}" for e in bad[:3])
                )
            if pid_alive(victim):
                row.problems.append(f"{point}: worker {victim} still alive")
        if pid_alive(first):
            row.problems.append(f"worker {first} still alive")
        row.recover_s = max(k["back_s"] for k in kills.values())
        row.recover_what = "slowest back in nginx's rotation"
        row.figures.update(
            direct_requests=direct_seen, direct_failed=n_lost,
            nginx_retried=sum(k["retried"] for k in kills.values()),
            replaced_s=max(k["replaced_s"] for k in kills.values()), kills=kills,
            kills_took_s=time.time() - started,
        )  # fmt: skip
        self.answer_checks[row.key] = self._check_kill_answers
        said = "; ".join(
            f"**{point}** ({what}): "
            + (
                f"nginx retried it on the other pod ({', '.join(kills[point]['retried_status'])})"
                if kills[point]["retried"]
                else "not retried: the killed worker's answer was out"
            )
            for point, what, _ in self.KILL_POINTS
        )
        row.notes = (
            "a worker holding a request of a client calling gunicorn directly: "
            f"{n_lost} of {direct_seen} direct requests failed"
            + (f" ({', '.join(lost)})" if lost else "")
            + " (the one it held; nothing retries without nginx). Then one worker killed "
            f"(SIGKILL) at each point of a load request's life: {said}. "
            "Each answer leaves a worker in one write (service/worker.py), so no kill left a "
            "client a 200 with a broken body; every access-log line of the killed pod around "
            "each kill is a whole 200 (`truncated` false)"
        )

    def _check_kill_answers(self, row: Row, answers: list[Answer]) -> None:
        """Every load request around each kill (sent within 1 s of it, or in flight then):
        a 200 with a complete, parseable answer (what the Locust user checks)."""
        counts = {}
        for point, info in row.figures.get("kills", {}).items():
            t = info["killed"]
            near = [a for a in answers if t - 1.0 <= a.start <= t + 1.0
                    or a.start <= t <= a.start + a.ms / 1000]  # fmt: skip
            broken = [a for a in near if a.error is not None or a.status != 200]
            counts[point] = len(near)
            info.update(near=len(near), near_failed=len(broken))
            if not near:
                row.problems.append(f"{point}: no load request around the kill")
            if broken:
                row.problems.append(
                    f"{point}: {len(broken)} of {len(near)} requests around the kill broken: "
                    + ", ".join(sorted({str(a.error) for a in broken})[:3])
                )
        row.notes += "; load requests within 1 s of each kill, all 200 with a whole answer: " + (
            ", ".join(f"{p} {n}" for p, n in counts.items())
        )

    def master_restart(self, row: Row) -> None:
        cfg, pod = self.cfg, self.pods[0]
        terminated = time.time()
        pod.signal(signal.SIGTERM)
        time.sleep(min(0.3, cfg.drain_s / 2))
        ready_during_drain = http_status(pod.url + "/readyz", timeout=1.0)
        if not pod.wait(cfg.drain_s + cfg.graceful_timeout + 15):
            raise StackError("the master did not exit within drain + graceful timeout")
        exited = time.time()
        served = [
            e for e in self.access.between(terminated, exited) if e["upstream_addr"] == pod.address
        ]
        pod.start()
        ready = time.time()
        back = self.rotation([pod], ready)
        retried = [
            e for e in self.access.between(terminated, back)
            if e["upstream_addr"].startswith(f"{pod.address}, ")
        ]  # fmt: skip
        row.recover_s, row.recover_what = back - terminated, "serving again"
        row.figures.update(
            drain_served=len(served), exit_s=exited - terminated, restart_s=ready - exited,
            nginx_retried=len(retried), ready_during_drain=ready_during_drain,
        )  # fmt: skip
        if ready_during_drain != 503:
            row.problems.append(f"/readyz answered {ready_during_drain} while draining, not 503")
        if exited - terminated < cfg.drain_s:
            row.problems.append(
                f"exited {exited - terminated:.2f}s after SIGTERM, before its drain"
            )
        if not served:
            row.problems.append("the pod answered nothing while draining")
        row.notes = (
            f"readiness 503 at once; the pod answered {len(served)} requests during its "
            f"{cfg.drain_s:g} s drain and exited {exited - terminated:.2f} s after SIGTERM "
            f"(in-flight requests finished); nginx retried {len(retried)} on the other pod; "
            f"started again, ready {ready - exited:.2f} s after the exit"
        )

    # --- promotions -----------------------------------------------------------
    def _promote_bad(self, version: str) -> Callable[[Row], None]:
        def fault(row: Row) -> None:
            expected = BAD_VERSIONS[version][1]
            store = str(self.store)
            planted = self.store / MODEL / version
            shutil.copytree(self.template / MODEL / version, planted)
            # Timed from when `current` changed (the CLI returned).
            started = predictor_cli(
                "promote", MODEL, version, "--store", store, redis_url=self.redis.url
            )

            def refused() -> bool:
                return all(
                    load_failures(p.url, version).get(expected, 0) >= 2 and all_serve(p, GOOD)()
                    for p in self.pods
                )

            try:
                done = poll(refused, 20, f"every worker refuses {version} ({expected})", 0.1)
                row.recover_s, row.recover_what = done - started, "all 4 workers refused"
            finally:  # a failed row must not leave the bad version current for the next rows
                predictor_cli("promote", MODEL, GOOD, "--store", store, redis_url=self.redis.url)
                shutil.rmtree(planted)
            logged = [
                p.name for p in self.pods
                if f"version {version} refused ({expected}" not in p.log_file.read_text()
            ]  # fmt: skip
            if logged:
                row.problems.append(f"no refusal log line in {', '.join(logged)}")
            row.notes = (
                f"refused ({expected}) by every worker, which kept serving v1; the operator "
                "promotes v1 back and deletes it"
            )
            if version == "pickle":
                row.notes += "; the pickle's command never ran"

        return fault

    def _plant_attack(self, version: str) -> Path:
        """``version`` of STORE_WRITER_VERSIONS written into the live store, as someone
        with write access to it would (tools/attacks.py)."""
        from service.store import ModelStore
        from tools import attacks

        store, key = ModelStore(self.store), SIGNING_KEY.encode()
        marker = self.store_writer_marker
        if version == "sw-timeit":
            return attacks.plant_version(store, MODEL, version, marker, "timeit.timeit")
        if version == "sw-timeit-signed":
            return attacks.plant_version(
                store, MODEL, version, marker, "timeit.timeit", signing_key=key
            )
        if version == "sw-manifest":
            directory = attacks.signed_copy(store, MODEL, GOOD, version, key)
            labels = store.manifest(MODEL, GOOD).output_labels
            attacks.tamper(directory, output_labels=list(reversed(labels)))
            return directory
        if version == "sw-replay":
            directory = attacks.copy_version(store, MODEL, GOOD, version)
            attacks.tamper(directory, version=version)
            return directory
        raise ValueError(f"no attack version {version}")

    def store_writer(self, row: Row) -> None:
        """Each attack version planted and promoted under load: every worker refuses it,
        v1 keeps answering, no payload code runs; the operator promotes v1 back."""
        from service.store import ModelStore

        # The writer points `current` at its version itself (no CLI: it needs none, and
        # the row stays cheap); the operator's repair is the same one write back to v1.
        store = ModelStore(self.store)
        refused: dict[str, dict[str, Any]] = {}
        for version, (_, expected) in STORE_WRITER_VERSIONS.items():
            planted = self._plant_attack(version)
            store.promote(MODEL, version)
            started = time.time()

            def done(version: str = version, expected: str = expected) -> bool:
                return all(
                    load_failures(p.url, version).get(expected, 0) >= 2 and all_serve(p, GOOD)()
                    for p in self.pods
                )

            try:
                at = poll(done, 20, f"every worker refuses {version} ({expected})", 0.1)
                probes = [
                    requests.post(self.nginx.url + "/predict", json={"input": IRIS_ROW}, timeout=10)
                    for _ in range(8)
                ]
                answered = sum(
                    1 for r in probes if r.status_code == 200 and r.json().get("version") == GOOD
                )
                failures = {p.name: load_failures(p.url, version) for p in self.pods}
                refused[version] = {
                    "reason": expected, "refused_s": round(at - started, 3),
                    "failures": failures, "v1_answers": answered, "probes": len(probes),
                }  # fmt: skip
                if answered != len(probes):
                    row.problems.append(f"{version}: {answered}/{len(probes)} probes from v1")
            finally:
                store.promote(MODEL, GOOD)
                shutil.rmtree(planted)
        code_ran = self.store_writer_marker.exists()
        row.figures.update(versions=refused, marker=code_ran)
        if code_ran:
            row.problems.append("an attack version ran its code (the marker file exists)")
        slowest = max((v["refused_s"] for v in refused.values()), default=0.0)
        row.recover_s, row.recover_what = slowest, "slowest: all 4 workers refused"
        reasons = ", ".join(f"{v} {e}" for v, (_, e) in STORE_WRITER_VERSIONS.items())
        row.notes = (
            f"{len(refused)} versions promoted ({reasons}): each refused by all 4 workers "
            "(predictor_model_load_failures_total), v1 answered every probe, no marker file"
        )

    # --- publishing into a broken store ---------------------------------------------
    def _publish(self, row: Row, errno_text: str, leftover_check: bool = True) -> None:
        model_file = self.run / "new-model.skops"
        if not model_file.exists():
            import skops.io as sio
            from sklearn.datasets import load_iris
            from sklearn.linear_model import LogisticRegression

            iris = load_iris()
            sio.dump(LogisticRegression(max_iter=500).fit(iris.data, iris.target), model_file)
        store = self.store
        before = sorted(p.name for p in (store / MODEL).iterdir())
        current = (store / MODEL / "current").read_text()
        result = run_cli(
            "publish", str(model_file), "--name", MODEL, "--store", str(store), "--promote",
            "--features", ",".join(f"f{i}" for i in range(4)),
            "--labels", "setosa,versicolor,virginica",
            env={"PREDICTOR_SIGNING_KEY": SIGNING_KEY},
        )  # fmt: skip
        after = sorted(p.name for p in (store / MODEL).iterdir() if p.name != ".filler")
        lines = result.stderr.strip().splitlines()
        row.figures.update(returncode=result.returncode, stderr=result.stderr.strip())
        if result.returncode != 1:
            row.problems.append(f"publish exited {result.returncode}: {result.stderr[-300:]}")
        if len(lines) != 1 or not lines[0].startswith(
            "predictor publish: error: cannot write to the model store"
        ):
            row.problems.append(f"not one clear line: {result.stderr[-400:]!r}")
        if errno_text not in result.stderr:
            row.problems.append(f"the message does not say {errno_text!r}")
        if after != [n for n in before if n != ".filler"]:
            row.problems.append(f"the store changed: {before} -> {after}")
        if (store / MODEL / "current").read_text() != current:
            row.problems.append("current changed")
        probe = requests.post(self.nginx.url + "/predict", json={"input": IRIS_ROW}, timeout=10)
        if probe.status_code != 200 or probe.json().get("version") != GOOD:
            row.problems.append(f"after the failed publish: {probe.status_code} {probe.text}")
        message = lines[0] if lines else ""
        row.notes = (
            f"exit 1, one line: `{message.replace(str(self.run), '…')}`; no version, no "
            f"staging directory left, `current` still {current.strip()}, v1 serving"
        )

    def publish_full(self, row: Row) -> None:
        with self.fs.full():
            self._publish(row, "No space left on device")

    def publish_readonly(self, row: Row) -> None:
        self.fs.read_only(True)
        try:
            self._publish(row, "Read-only file system")
        finally:
            self.fs.read_only(False)

    # --- abuse through nginx ----------------------------------------------------------
    def abuse_schemathesis(self, row: Row) -> None:
        cfg = self.cfg
        if not SCHEMATHESIS.exists():
            raise StackError(f"{SCHEMATHESIS} missing: pip install -r deps/pip-v2.txt")
        started = time.time()
        result = subprocess.run(
            [str(SCHEMATHESIS), "run", f"{self.nginx.url}/openapi.json",
             "--url", self.nginx.url, "--checks", "not_a_server_error",
             "--max-examples", str(cfg.schemathesis_examples), "--seed", "8",
             "--max-time", str(cfg.schemathesis_max_time), "--request-timeout", "10",
             "--phases", cfg.schemathesis_phases,
             "--workers", "1", "--no-color", "--warnings", "off"],
            capture_output=True, text=True, timeout=cfg.schemathesis_max_time + 60,
            cwd=self.run,
        )  # fmt: skip
        time.sleep(0.2)
        sent = [
            e for e in self.access.between(started)
            if e["user_agent"].lower().startswith("schemathesis")
        ]  # fmt: skip
        statuses = Counter(e["status"] for e in sent)
        server_errors = {s: n for s, n in statuses.items() if s >= 500}
        row.figures.update(requests=len(sent), statuses=dict(statuses))
        if result.returncode != 0:
            tail = "\n".join(result.stdout.splitlines()[-15:])
            row.problems.append(f"schemathesis exited {result.returncode}: {tail}")
        if server_errors or not sent:
            row.problems.append(f"schemathesis got {dict(statuses)}")
        top = ", ".join(f"{n}x {s}" for s, n in sorted(statuses.items()))
        row.notes = (
            f"{len(sent)} generated requests (phases {cfg.schemathesis_phases}, "
            f"{cfg.schemathesis_examples} examples each): {top}; no 5xx"
        )

    def _send(self, row: Row, method: str, path: str, **kw: Any) -> requests.Response:
        rid = f"chaos-{row.key}-{secrets.token_hex(4)}"
        kw.setdefault("headers", {})["X-Request-ID"] = rid
        response = requests.request(method, self.nginx.url + path, timeout=30, **kw)
        response.request_id = rid  # type: ignore[attr-defined]
        return response

    def _upstream_of(self, request_id: str) -> str:
        when = poll(
            lambda: self.access.first(0, lambda e: e["request_id"] == request_id) is not None,
            5, f"access log line of {request_id}",
        )  # fmt: skip
        del when
        return next(e for _, e in self.access.entries if e["request_id"] == request_id)[
            "upstream_addr"
        ]

    def abuse_big_body(self, row: Row) -> None:
        body = b'{"input": [' + b"1.0, " * (10 * 1024 * 1024 // 5) + b"1.0]}"
        response = self._send(
            row, "POST", "/predict", data=body, headers={"Content-Type": "application/json"}
        )
        problem = json_error(response, 413, "payload_too_large")
        upstream = self._upstream_of(response.request_id)  # type: ignore[attr-defined]
        if problem:
            row.problems.append(problem)
        if upstream:
            row.problems.append(f"it reached {upstream}")
        row.notes = (
            f"{len(body) / 1e6:.1f} MB with Content-Length: JSON 413 from nginx at once, "
            "never reached gunicorn"
        )

    def abuse_million_rows(self, row: Row) -> None:
        line = json.dumps(IRIS_ROW).encode() + b","
        sent = [0]

        def chunks() -> Iterator[bytes]:  # no Content-Length: nginx counts as it reads
            yield b'{"input": ['
            for _ in range(1000):
                sent[0] += 1000
                yield line * 1000
            yield json.dumps(IRIS_ROW).encode() + b"]}"

        try:
            response = self._send(
                row, "POST", "/predict", data=chunks(),
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
        except requests.ConnectionError as exc:
            row.problems.append(f"the connection broke instead of a 413: {exc}")
            return
        problem = json_error(response, 413, "payload_too_large")
        if problem:
            row.problems.append(problem)
        upstream = self._upstream_of(response.request_id)  # type: ignore[attr-defined]
        if upstream:
            row.problems.append(f"it reached {upstream}")
        row.notes = (
            f"1,000,000 rows (~{len(line):.0f} MB: {len(line)} bytes a row) streamed chunked: "
            "JSON 413 from "
            "nginx once the body passed its 1 MiB limit, never reached gunicorn"
        )

    def abuse_rows(self, row: Row) -> None:
        rows = [IRIS_ROW] * 1001
        response = self._send(row, "POST", "/predict", json={"input": rows})
        problem = json_error(response, 413, "too_many_rows")
        if problem:
            row.problems.append(problem)
        message = response.json()["error"]["message"] if not problem else ""
        size = len(json.dumps(rows)) // 1000
        row.notes = f"{size} KB, under the body limit: the app's JSON 413 `{message}`"

    def abuse_nested(self, row: Row) -> None:
        deep = b"[" * 200_000 + b"]" * 200_000
        too_deep = self._send(
            row, "POST", "/predict", data=b'{"input": ' + deep + b"}",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        nested: Any = IRIS_ROW
        for _ in range(500):  # deep, but within the parser's limit: validation refuses it
            nested = [nested]
        odd = self._send(row, "POST", "/v1/models/iris:predict", json={"instances": nested})
        for response, code in ((too_deep, "invalid_json"), (odd, None)):
            problem = json_error(response, 400, code)
            if problem:
                row.problems.append(problem)
        row.notes = (
            "200,000 levels (400 KB): JSON 400 invalid_json (the parser's depth limit); "
            f"500 levels of instances: JSON 400 {odd.json()['error'].get('code')}"
        )

    def abuse_slow_body(self, row: Row) -> None:
        cfg = self.cfg
        request = (
            "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            'Content-Length: 64\r\nX-Request-ID: chaos-slow-{i}\r\n\r\n{{"input": ['
        )
        socks = []
        started = time.time()
        for i in range(cfg.slow_clients):
            s = socket.create_connection(("127.0.0.1", self.nginx.port), timeout=30)
            s.sendall(request.format(i=i).encode())  # ... and nothing more
            socks.append((s, time.time()))  # each one's own clock: a slow loop is no fault
        closed_after: list[float] = []

        def wait_closed(sent: tuple[socket.socket, float]) -> None:
            s, sent_at = sent
            with contextlib.suppress(OSError):
                while s.recv(4096):
                    pass
            closed_after.append(time.time() - sent_at)
            s.close()

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(wait_closed, socks))
        time.sleep(0.2)
        logged = [
            e for e in self.access.between(started) if e["request_id"].startswith("chaos-slow")
        ]
        statuses = Counter(e["status"] for e in logged)
        reached = [e for e in logged if e["upstream_addr"]]
        worst = max(closed_after)
        row.recover_s, row.recover_what = worst, "all closed"
        row.figures.update(closed_after_max=worst, statuses=dict(statuses))
        # Not before nginx's body timeout; after it, a busy machine may take a while.
        if worst > cfg.body_timeout_s + 10 or min(closed_after) < cfg.body_timeout_s - 0.5:
            row.problems.append(f"closed after {min(closed_after):.1f}-{worst:.1f}s")
        if reached:
            row.problems.append(f"{len(reached)} reached gunicorn")
        if len(logged) != cfg.slow_clients:
            row.problems.append(f"{len(logged)} of {cfg.slow_clients} in the access log")
        row.notes = (
            f"{cfg.slow_clients} clients (more than the 4 gunicorn workers) send headers and "
            f"stall: nginx closed each after its client_body_timeout ({cfg.body_timeout_s} s "
            f"here, 10 s by default), logged {dict(statuses)}; none reached gunicorn "
            "(nginx buffers bodies), so the load never queued behind them"
        )

    def abuse_flood(self, row: Row) -> None:
        count = self.cfg.flood_requests
        headers = {"X-API-Key": "flood-" + secrets.token_urlsafe(16)}
        results: list[requests.Response] = []

        def worker(n: int) -> None:
            with requests.Session() as session:
                for _ in range(n):
                    r = session.post(
                        self.nginx.url + "/predict", json={"input": IRIS_ROW},
                        headers=headers, timeout=10,
                    )  # fmt: skip
                    results.append(r)

        started = time.time()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(worker, [count // 8] * 8))
        seconds = time.time() - started
        statuses = Counter(r.status_code for r in results)
        bad = [json_error(r, 429, "rate_limited") for r in results if r.status_code == 429]
        bad = [b for b in bad if b] + [
            f"Retry-After {r.headers.get('Retry-After')}"
            for r in results
            if r.status_code == 429 and r.headers.get("Retry-After") != "1"
        ]
        row.figures.update(statuses=dict(statuses), seconds=round(seconds, 2))
        # nginx admits at most burst + rate x elapsed of one key's requests: a bound that
        # holds at any speed of this machine (+1 for the request in flight at each end).
        allowed = FLOOD_KEY_BURST + FLOOD_KEY_RATE * seconds + 2
        if set(statuses) - {200, 429} or statuses[200] > allowed or not statuses[429]:
            row.problems.append(
                f"the flood got {dict(statuses)} in {seconds:.1f} s; at most {allowed:.0f} "
                "may pass the key's limit"
            )
        if bad:
            row.problems.append(f"429s not as documented: {bad[:2]}")
        row.notes = (
            f"{len(results)} requests in {seconds:.1f} s with one key (its limit "
            f"{FLOOD_KEY_RATE} r/s, burst {FLOOD_KEY_BURST}): {statuses[200]}x 200, "
            f"{statuses[429]}x JSON 429 with Retry-After; the load "
            "(no key) was not limited"
        )

    def abuse_access_control(self, row: Row) -> None:
        front = self.keyed_nginx
        key = self.api_keys["alice"]
        checks: list[tuple[str, requests.Response, int]] = []

        def predict(**headers: str) -> requests.Response:
            return requests.post(
                front.url + "/predict", json={"input": IRIS_ROW}, headers=headers, timeout=10
            )

        checks += [
            ("predict, no key", predict(), 401),
            ("predict, wrong key", predict(**{"X-API-Key": secrets.token_urlsafe(32)}), 401),
            ("predict, admin token as key", predict(Authorization=f"Bearer {self.admin_token}"),
             401),
            ("predict, key", predict(Authorization=f"Bearer {key}"), 200),
        ]  # fmt: skip
        index = "/v2/repository/index"
        for where, base, auth, want in [
            ("public", front.url, f"Bearer {self.admin_token}", 403),
            ("internal", front.internal_url, None, 401),
            ("internal", front.internal_url, f"Bearer {key}", 403),
            ("internal", front.internal_url, f"Bearer {secrets.token_urlsafe(32)}", 403),
            ("internal", front.internal_url, f"Bearer {self.admin_token}", 200),
        ]:
            headers = {"Authorization": auth} if auth else {}
            what = {None: "none", f"Bearer {self.admin_token}": "admin token",
                    f"Bearer {key}": "a prediction key"}.get(auth, "a wrong token")  # fmt: skip
            response = requests.post(base + index, headers=headers, timeout=10)
            checks.append((f"repository index on the {where} port, {what}", response, want))
        wrong = [f"{name}: {r.status_code}" for name, r, want in checks if r.status_code != want]
        wrong += [
            f"{name}: not JSON"
            for name, r, want in checks
            if want != 200 and not r.headers.get("Content-Type", "").startswith("application/json")
        ]
        row.figures.update(checks={name: r.status_code for name, r, _ in checks})
        if wrong:
            row.problems.append("; ".join(wrong))
        row.notes = (
            "keyed pod behind its own nginx: prediction without a key, with a wrong key or the "
            "admin token → JSON 401, with its key → 200; repository API on the public port → "
            "403 even with the token; on the internal port no token → 401, a prediction key or "
            "a wrong token → 403, the token → 200"
        )

    def abuse_metrics(self, row: Row) -> None:
        statuses = {}
        for path in ("/metrics", "//metrics", "/%6detrics", "/metrics/"):
            response = self._send(row, "GET", path)
            statuses[path] = response.status_code
            problem = json_error(response, 404, "not_found")
            if problem:
                row.problems.append(f"{path}: {problem}")
        internal = requests.get(self.nginx.internal_url + "/metrics", timeout=10)
        if internal.status_code != 200 or "predictor_http_requests_total" not in internal.text:
            row.problems.append(f"internal /metrics: {internal.status_code}")
        row.notes = (
            f"public port: {', '.join(f'{p} {s}' for p, s in statuses.items())} (JSON); "
            "the internal listener serves them"
        )


def run_chaos(cfg: Config) -> tuple[list[Row], list[str]]:
    """Start the stack, run the faults, stop everything by PID; (rows, run-level problems)."""
    run = Path(tempfile.mkdtemp(prefix="chaos-", dir=cfg.run_dir))
    with contextlib.ExitStack() as cleanup:
        chaos = Chaos(cfg, run, cleanup)
        started = time.monotonic()
        chaos.setup()
        cfg.log(f"  stack up in {time.monotonic() - started:.1f}s (logs in {run})")
        chaos.execute()
    return chaos.rows, chaos.problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the make-test form")
    parser.add_argument("--users", type=int, help="Locust users (40; short 20)")
    parser.add_argument("--only", default="", help="fault keys or prefixes, comma-separated")
    parser.add_argument("--keep-run-dir", type=Path, help="keep every log under this directory")
    parser.add_argument("--table-file", type=Path, help="also write the table here")
    parser.add_argument("--json-file", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    run_dir = args.keep_run_dir or Path(tempfile.mkdtemp(prefix="chaos-run-"))
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = Config(**(SHORT if args.short else {}), run_dir=run_dir, log=log)
    if args.users:
        cfg.users = args.users
    cfg.only = tuple(o.strip() for o in args.only.split(",") if o.strip())
    log(f"chaos: {'short' if args.short else 'full'} form, {cfg.users} Locust users")
    # SIGTERM unwinds like Ctrl-C: every server stopped by PID, the tmpfs unmounted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        rows, problems = run_chaos(cfg)
    except StackError as exc:
        log(f"error: {exc}")
        return 1
    finally:
        if not args.keep_run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
    text = table(rows)
    print(text)
    for problem in problems:
        print(f"\n**run FAILED: {problem}**")
    if args.table_file:
        args.table_file.write_text(text + "\n")
    if args.json_file:
        args.json_file.write_text(
            json.dumps(
                {
                    "rows": [
                        asdict(r)
                        | {"passed": r.passed, "end": None if r.end == float("inf") else r.end}
                        for r in rows
                    ],
                    "problems": problems,
                },
                indent=2,
                default=str,
            )  # fmt: skip
        )
    return 0 if problems == [] and all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
