"""Side-by-side benchmark: our stack against the HTTP floor, the seed app and MLServer.

    .venv/bin/python loadtests/bench.py [--runtime auto|sklearn|onnx] [--quick] ...
    make bench [BENCH_ARGS="--rounds 3"]

Cases, per model (iris LogisticRegression, iris-rf 100-tree RandomForest) and
per request shape (1 row, 100-row batch):

  (a) our stack through nginx (nginx -> gunicorn -> Redis), seed route, cache misses
  (b) the same, every request a cache hit, the model on scikit-learn (slower than a
      Redis round trip, so the stack caches it in Redis and per worker)
  (c) our gunicorn without nginx (Redis still on), cache misses
  (d) the seed article's Flask app as written, gunicorn, 2 sync workers
      (batches on the /predict/batch route its copy in loadtests/ adds)
  (e) MLServer 1.7.1 + mlserver-sklearn at default settings
  (f) the floor: a raw WSGI app reading the body and answering constant JSON,
      gunicorn, 2 sync workers
  (g) our stack through nginx, Open Inference Protocol (V2) infer, cache misses

One server runs at a time, started fresh for each model; the servers take
turns round after round (A B C, then C B A, ...) so that machine drift cancels
in the ratios. Every case is loaded by the same generator (wrk, one thread,
fixed connections, loadtests/wrk_rows.lua), bounded by time per case and by the
number of rounds, with the same row stream: cases (a), (d) and (e) of a round
get byte-identical rows in the same order (our service and the seed app even get
identical bodies: the seed protocol).

Server cost is read from /proc: CPU (utime+stime of the server's processes,
nginx and redis-server included where they are on the path) per request, and
PSS (smaps_rollup) of those processes after the run. Then one store of 50 models
is served and its PSS read (loadtests/many_models.py). The table, the goals of
the performance issue, the exact commands and the raw figures go to
loadtests/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests import many_models, procstat  # noqa: E402
from loadtests.servers import (  # noqa: E402
    ROOT,
    VENV_BIN,
    FloorApp,
    MLServer,
    OurStack,
    SeedApp,
    Server,
)

LUA = ROOT / "loadtests" / "wrk_rows.lua"
RESULTS = ROOT / "loadtests" / "results"
BENCH = ROOT / ".bench"

CASES = {
    "a": "ours via nginx, misses",
    "b": "ours via nginx, hits (sklearn)",
    "c": "ours gunicorn, misses",
    "d": "seed app (gunicorn 2 sync)",
    "e": "MLServer 1.7.1 sklearn",
    "f": "floor: constant JSON (gunicorn 2 sync)",
    "g": "ours via nginx, V2 infer, misses",
    "h": "ours via nginx, misses, with --compare",
}
SERVER_OF = {
    "a": "ours",
    "b": "ours-hits",
    "c": "ours",
    "d": "seed",
    "e": "mlserver",
    "f": "floor",
    "g": "ours",
    "h": "ours-alt",
}
SERVER_KINDS = ("ours", "ours-alt", "ours-hits", "seed", "floor", "mlserver")
MODEL_TITLES = {"iris": "LogisticRegression", "iris-rf": "RandomForest (100 trees)"}


@dataclass
class Run:
    """One wrk run of one case in one round."""

    model: str
    rows: int
    case: str
    round: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    error_kinds: dict
    cpu_us_per_req: float
    pss_mib: float
    rss_mib: float
    other_cores: float = 0.0  # CPU used meanwhile by neither the server nor wrk (noise)
    processes: list = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--runtime",
        choices=["sklearn", "onnx", "auto"],
        default="auto",
        help="PREDICTOR_RUNTIME of our service (default: the shipped one; the seed app and "
        "MLServer always run scikit-learn, case (b) too)",
    )
    p.add_argument("--duration", type=float, default=6.0, help="seconds measured per case")
    p.add_argument("--warmup", type=float, default=1.5, help="seconds of warm-up per case")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (A B, B A, ...)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (concurrency)")
    p.add_argument("--models", default="iris,iris-rf", help="comma-separated model names")
    p.add_argument("--rows", default="1,100", help="rows per request, comma-separated")
    p.add_argument("--cases", default="abdefg", help="which of the cases a-g to run")
    p.add_argument(
        "--many-models",
        type=int,
        default=50,
        help="also read the PSS of our gunicorn serving a store of this many models (0: skip)",
    )
    p.add_argument(
        "--protocol",
        choices=["seed", "v1", "v2"],
        default="seed",
        help="API our service is loaded through (seed = same bytes as case d)",
    )
    p.add_argument(
        "--store",
        type=Path,
        default=BENCH / "store",
        help="model store (trained with `predictor train-demo` when empty)",
    )
    p.add_argument(
        "--our-cache",
        choices=["redis", "local", "off"],
        default="redis",
        help="our service's cache: redis-server (the stack), in-process LRU, or none",
    )
    p.add_argument(
        "--our-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for our gunicorn, e.g. PREDICTOR_THREADS=4 (repeatable)",
    )
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="case (h): case (a) again on a second stack with this environment (a lever, "
        "measured before/after in one run, e.g. PREDICTOR_THREADS=2); repeatable",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="where the table and JSON go")
    p.add_argument(
        "--workdir",
        type=Path,
        default=BENCH,
        help="run directories, logs and exported joblib models",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 1 round, 3 s per case, 1 s warm-up"
    )
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument(
        "--report-from",
        type=Path,
        metavar="JSON",
        help="print the report of a saved bench-*.json again (no run); give the same "
        "--models/--rows/--cases/--runtime it was run with",
    )
    args = p.parse_args(argv)  # fmt: skip
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, min(args.duration, 3.0), min(args.warmup, 1.0)
    args.models = [m for m in args.models.split(",") if m]
    args.rows = [int(r) for r in args.rows.split(",") if r]
    if args.compare:
        CASES["h"] = "ours via nginx, misses, with " + " ".join(args.compare)
        args.cases += "h"
    args.cases = sorted(set(args.cases) & set(CASES))
    if args.quick:
        args.many_models = min(args.many_models, 3)
    return args


# --- models -------------------------------------------------------------------


def ensure_store(store: Path, models: list[str], runtime: str = "sklearn") -> None:
    """Train the demo models into the bench store once (again when it lacks ONNX graphs)."""
    missing = [m for m in models if not (store / m / "current").exists()]
    if not missing and runtime != "sklearn" and not all(_compiled(store, m) for m in models):
        print(f"{store} holds no compiled graphs (older train-demo): training again", flush=True)
        shutil.rmtree(store)
        missing = models
    if missing:
        print(f"training the demo models into {store} ...", flush=True)
        subprocess.run(
            [str(VENV_BIN / "predictor"), "train-demo", "--store", str(store)],
            check=True,
            cwd=ROOT,
        )


def _compiled(store: Path, name: str) -> bool:
    version = (store / name / "current").read_text().strip()
    manifest = json.loads((store / name / version / "manifest.json").read_text())
    return bool(manifest.get("compiled"))


def export_estimator(store: Path, name: str, workdir: Path) -> Path:
    """The very estimator our service serves, as a joblib file for (d) and (e).

    Loaded from the store's artifact through the service's own loader (digest
    and signature checked), then dumped with joblib, the format both the seed
    article and mlserver-sklearn read.
    """
    import joblib

    from service.artifacts import load_estimator
    from service.settings import Settings
    from service.store import ModelStore

    settings = Settings(MODEL_STORE=store)
    models = ModelStore(store)
    version = models.current(name)
    if version is None:
        raise SystemExit(f"model {name!r} has no current version in {store}")
    manifest = models.manifest(name, version)
    out = workdir / "models" / f"{name}-{manifest.sha256[:12]}.joblib"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        estimator = load_estimator(
            models.version_dir(name, version),
            manifest,
            settings.signing_key,
            settings.ALLOW_UNSIGNED_PICKLE,
        )
        joblib.dump(estimator, out)
    return out


# --- one case -------------------------------------------------------------------


def stream_seed(rnd: int, model_i: int, rows_i: int, case: str) -> int:
    """Rows of (a), (d), (e) share a stream; (c) and (b) get their own (fresh keys)."""
    return 1000 * (rnd + 1) + 100 * model_i + 10 * rows_i + {"c": 2, "b": 3}.get(case, 1)


def wrk(url: str, protocol: str, rows: int, mode: str, seed: int, seconds: float,
        connections: int) -> dict:  # fmt: skip
    argv = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
        "-s", str(LUA), url, "--", protocol, str(rows), mode, str(seed),
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON ") :])
    raise RuntimeError(f"wrk gave no result (rc {out.returncode}): {out.stderr or out.stdout}")


def case_protocol(server: Server, case: str) -> str:
    """The API a case posts to: V2 tensors for (g), else the server's own."""
    return "v2" if case == "g" else server.protocol


def wrk_command(url: str, protocol: str, rows: int, mode: str, seconds: float,
                connections: int) -> str:  # fmt: skip
    """The wrk command line of a case, as run (SEED varies by round and case)."""
    return (
        f"wrk -t1 -c{connections} -d{max(1, round(seconds))}s --timeout 5s "
        f"-s loadtests/wrk_rows.lua {url} -- {protocol} {rows} {mode} SEED"
    )


def role_of(pid: int, server: Server) -> str:
    cmd = procstat.cmdline(pid)
    if cmd.startswith("nginx"):
        return "nginx " + ("master" if "master" in cmd else "worker")
    if "redis-server" in cmd:
        return "redis-server"
    roots = server.root_pids()
    if pid in roots:
        return f"{server.name} main"
    return f"{server.name} worker"


def run_case(server: Server, args, model: str, model_i: int, rows: int, rows_i: int,
             case: str, rnd: int) -> Run:  # fmt: skip
    direct = case == "c"
    protocol = case_protocol(server, case)
    url = server.url(model, direct=direct, rows=rows, protocol=protocol)
    mode = "repeat" if case == "b" else "unique"
    seed = stream_seed(rnd, model_i, rows_i, case)
    if args.warmup > 0:  # a different stream: the measured rows stay cache misses
        wrk(url, protocol, rows, mode, seed + 5 if mode == "unique" else seed,
            args.warmup, args.connections)  # fmt: skip
    pids = procstat.tree(server.root_pids(direct))
    before = procstat.cpu_sample(pids)
    busy0, kids0, t0 = procstat.machine_busy_seconds(), os.times(), time.monotonic()
    result = wrk(url, protocol, rows, mode, seed, args.duration, args.connections)
    busy1, kids1, t1 = procstat.machine_busy_seconds(), os.times(), time.monotonic()
    pids_after = procstat.tree(server.root_pids(direct))
    cpu = procstat.cpu_used(before, procstat.cpu_sample(sorted(set(pids) | set(pids_after))))
    wrk_cpu = (kids1.children_user + kids1.children_system) - (
        kids0.children_user + kids0.children_system
    )
    other = max(0.0, (busy1 - busy0) - cpu - wrk_cpu) / (t1 - t0)
    mems = [m for m in (procstat.memory(p, role_of(p, server)) for p in pids_after) if m]
    n = result["requests"]
    seconds = result["duration_us"] / 1e6
    errors = sum(result["errors"].values())
    return Run(
        model=model, rows=rows, case=case, round=rnd, requests=n, seconds=seconds,
        rps=n / seconds if seconds else 0.0,
        p50_ms=result["p50_us"] / 1000, p99_ms=result["p99_us"] / 1000,
        errors=errors, error_kinds={k: v for k, v in result["errors"].items() if v},
        cpu_us_per_req=cpu * 1e6 / n if n else 0.0,
        pss_mib=sum(m.pss_kib for m in mems) / 1024,
        rss_mib=sum(m.rss_kib for m in mems) / 1024,
        other_cores=other,
        processes=[asdict(m) for m in mems],
    )  # fmt: skip


# --- the plan -------------------------------------------------------------------


def make_server(kind: str, model: str, args, workdir: Path, exported: dict) -> Server:
    if kind in ("ours", "ours-alt", "ours-hits"):
        env = dict(kv.split("=", 1) for kv in args.our_env)
        if kind == "ours-alt":
            env.update(kv.split("=", 1) for kv in args.compare)
        runtime = args.runtime
        if kind == "ours-hits":  # a model slower than a Redis round trip: scikit-learn
            runtime = "sklearn"
        return OurStack(
            workdir, model, args.store.resolve(), runtime, args.protocol, env, args.our_cache
        )
    if kind == "seed":
        return SeedApp(workdir, exported[model])
    if kind == "floor":
        return FloorApp(workdir)
    return MLServer(workdir, model, exported[model])


def run_all(args) -> list[Run]:
    ensure_store(args.store, args.models, args.runtime)
    exported = {}
    if {"d", "e"} & set(args.cases):
        exported = {m: export_estimator(args.store, m, args.workdir) for m in args.models}
    kinds = [k for k in SERVER_KINDS if k in {SERVER_OF[c] for c in args.cases}]
    workdir = args.workdir / "run"
    workdir.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    total = len(args.cases) * len(args.models) * len(args.rows) * args.rounds
    args.commands = {}
    for rnd in range(args.rounds):
        order = kinds if rnd % 2 == 0 else list(reversed(kinds))
        for model_i, model in enumerate(args.models):
            for kind in order:
                server = make_server(kind, model, args, workdir, exported)
                server.start()
                try:
                    server.wait_ready(model, args.ready_timeout)
                    args.commands.setdefault(kind, server.command())
                    if kind == "ours" and "c" in args.cases:
                        server.wait_ready(model, args.ready_timeout, direct=True)
                    for rows_i, rows in enumerate(args.rows):
                        for case in [c for c in args.cases if SERVER_OF[c] == kind]:
                            url = server.url(model, case == "c", rows, case_protocol(server, case))
                            args.commands.setdefault(
                                f"({case}) {rows} row(s)",
                                wrk_command(url, case_protocol(server, case), rows,
                                            "repeat" if case == "b" else "unique",
                                            args.duration, args.connections),
                            )  # fmt: skip
                            run = run_case(server, args, model, model_i, rows, rows_i, case, rnd)
                            runs.append(run)
                            print(
                                f"[{len(runs)}/{total}] round {rnd + 1} {model} {rows} row(s) "
                                f"({case}) {CASES[case]}: {run.rps:.0f} req/s, "
                                f"p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, "
                                f"{run.errors} errors, {run.cpu_us_per_req:.0f} µs CPU/req, "
                                f"other load {run.other_cores:.2f} cores, "
                                f"load average {os.getloadavg()[0]:.1f}",
                                flush=True,
                            )
                finally:
                    server.stop()
    return runs


# --- the report -------------------------------------------------------------------


@dataclass
class Summary:
    model: str
    rows: int
    case: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_req: float
    pss_mib: float
    rounds: int
    other_cores: float


def summarise(runs: list[Run]) -> dict[tuple, Summary]:
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((r.model, r.rows, r.case), []).append(r)
    out = {}
    for key, rs in groups.items():
        n = sum(r.requests for r in rs)
        out[key] = Summary(
            *key,
            rps=statistics.fmean(r.rps for r in rs),
            p50_ms=statistics.median(r.p50_ms for r in rs),
            p99_ms=statistics.median(r.p99_ms for r in rs),
            errors=sum(r.errors for r in rs),
            cpu_us_per_req=sum(r.cpu_us_per_req * r.requests for r in rs) / n if n else 0.0,
            pss_mib=max(r.pss_mib for r in rs),
            rounds=len(rs),
            other_cores=statistics.fmean(r.other_cores for r in rs),
        )
    return out


def ratio(s: dict, model: str, rows: int, num: str, den: str, per: str = "req") -> float | None:
    """Throughput of case ``num`` over ``den`` (requests/s; same rows, so rows/s too)."""
    a, b = s.get((model, rows, num)), s.get((model, rows, den))
    if a is None or b is None or not b.rps:
        return None
    return a.rps / b.rps


def cpu_ratio(s: dict, model: str, rows: int, num: str, den: str) -> float | None:
    """Requests per server CPU-second, num against den: capacity, robust to foreign load."""
    a, b = s.get((model, rows, num)), s.get((model, rows, den))
    if a is None or b is None or not a.cpu_us_per_req:
        return None
    return b.cpu_us_per_req / a.cpu_us_per_req


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×"


def table(s: dict, models: list[str], rows_list: list[int], cases: list[str]) -> str:
    lines = [
        "| model | rows/req | case | req/s | rows/s | p50 ms | p99 ms | p99/p50 | errors "
        "| CPU µs/req | CPU × floor (f) | req/s vs (d) | PSS MiB | other load |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for model in models:
        for rows in rows_list:
            for case in cases:
                x = s.get((model, rows, case))
                if x is None:
                    continue
                floor = s.get((model, rows, "f"))
                cpu_floor = (
                    x.cpu_us_per_req / floor.cpu_us_per_req
                    if floor and floor.cpu_us_per_req
                    else None
                )
                tail = x.p99_ms / x.p50_ms if x.p50_ms else 0.0
                lines.append(
                    f"| {model} | {rows} | ({case}) {CASES[case]} | {x.rps:,.0f} | "
                    f"{x.rps * rows:,.0f} | {x.p50_ms:.2f} | {x.p99_ms:.2f} | {tail:.1f} | "
                    f"{x.errors} | {x.cpu_us_per_req:,.0f} | {fmt_ratio(cpu_floor)} | "
                    f"{fmt_ratio(ratio(s, model, rows, case, 'd'))} | {x.pss_mib:.0f} | "
                    f"{x.other_cores:.2f} |"
                )
    return "\n".join(lines)


@dataclass
class Goal:
    label: str
    value: float | None
    target: float
    at_most: bool = False  # the value must stay at or below the target
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.target if self.at_most else self.value >= self.target

    def line(self) -> str:
        if self.value is None:
            return f"- {self.label}: not measured in this run"
        sign = "≤" if self.at_most else "≥"
        verdict = "met" if self.met else "MISSED"
        note = f"; {self.note}" if self.note else ""
        return f"- {self.label}: {self.value:.2f}× (goal {sign} {self.target:g}×) — {verdict}{note}"


def goals(s: dict, models: list[str], rows_list: list[int]) -> list[Goal]:
    """The performance issue's goals, each measured in this run."""
    lr, rf = "iris", "iris-rf"
    out: list[Goal] = []

    def cpu_note(model: str, rows: int, num: str, den: str) -> str:
        return f"by server CPU per request {fmt_ratio(cpu_ratio(s, model, rows, num, den))}"

    out.append(Goal("LR 1 row via nginx (a) / seed app (d), req/s", ratio(s, lr, 1, "a", "d"),
                    1.3, note=cpu_note(lr, 1, "a", "d")))  # fmt: skip
    a, f = s.get((lr, 1, "a")), s.get((lr, 1, "f"))
    floor_x = a.cpu_us_per_req / f.cpu_us_per_req if a and f and f.cpu_us_per_req else None
    out.append(Goal("LR 1 row via nginx (a): CPU per request × the floor's (f)", floor_x, 2.5,
                    at_most=True,
                    note=f"{a.cpu_us_per_req:,.0f} vs {f.cpu_us_per_req:,.0f} µs" if floor_x
                    else ""))  # fmt: skip
    out.append(Goal("RF(100) 1 row via nginx (a) / MLServer (e), req/s", ratio(s, rf, 1, "a", "e"),
                    20, note=cpu_note(rf, 1, "a", "e")))  # fmt: skip
    out.append(Goal("RF(100) 1 row via nginx (a) / seed app (d), req/s", ratio(s, rf, 1, "a", "d"),
                    10, note=cpu_note(rf, 1, "a", "d")))  # fmt: skip
    for model in models:
        for rows in rows_list:
            if rows > 1:
                out.append(Goal(f"{model} {rows} rows via nginx (a) / seed app (d), rows/s",
                                ratio(s, model, rows, "a", "d"), 1.5,
                                note=cpu_note(model, rows, "a", "d")))  # fmt: skip
    for model in models:
        for rows in rows_list:
            out.append(Goal(f"{model} {rows} row(s) V2 infer (g) / seed route (a), req/s",
                            ratio(s, model, rows, "g", "a"), 0.9,
                            note="within 10%: ≥ 0.9×"))  # fmt: skip
    out.append(Goal("cache hits, RF(100) on scikit-learn (b) / floor (f), req/s",
                    ratio(s, rf, 1, "b", "f"), 0.5, note=cpu_note(rf, 1, "b", "f")))  # fmt: skip
    for model in models:
        for rows in rows_list:
            if (model, rows, "h") in s:
                out.append(Goal(f"{model} {rows} row(s) lever (h) / (a), req/s",
                                ratio(s, model, rows, "h", "a"), 1.0,
                                note=cpu_note(model, rows, "h", "a")))  # fmt: skip
    worst = max(s.values(), key=lambda x: x.p99_ms / x.p50_ms if x.p50_ms else 0, default=None)
    if worst is not None and worst.p50_ms:
        bad = [x for x in s.values() if x.p50_ms and x.p99_ms > 3 * x.p50_ms]
        note = f"worst {worst.model}/{worst.rows}/({worst.case})"
        if bad:
            note += "; over in " + ", ".join(
                f"{x.model}/{x.rows}/({x.case}) {x.p99_ms / x.p50_ms:.1f}×" for x in bad
            )
        out.append(Goal("p99 / p50, every case", worst.p99_ms / worst.p50_ms, 3.0, at_most=True,
                        note=note))  # fmt: skip
    return out


def memory_lines(runs: list[Run], many: list[dict]) -> list[str]:
    """PSS per worker of our stack (case a, last run of each model), and the many-model store."""
    out = []
    for model in dict.fromkeys(r.model for r in runs):
        ours = [r for r in runs if r.case == "a" and r.model == model]
        procs = ours[-1].processes if ours else []
        workers = [p for p in procs if p["role"] == "our stack worker"]
        if workers:
            rss = statistics.fmean(p["rss_kib"] for p in workers) / 1024
            pss = statistics.fmean(p["pss_kib"] for p in workers) / 1024
            out.append(
                f"- PSS per worker, our stack serving the demo store ({model} case a, "
                f"{len(workers)} workers): {pss:.1f} MiB (RSS {rss:.1f} MiB, {pss / rss:.0%} "
                f"not shared)"
            )
    if len(many) == 2:
        one, lots = (many_models.StoreMemory(**m) for m in many)
        per_model = (lots.total_pss_mib - one.total_pss_mib) / max(1, lots.models - one.models)
        out.append(
            f"- one store of {lots.models} models (our gunicorn, {lots.workers} workers): PSS "
            f"{lots.total_pss_mib:.1f} MiB in all ({lots.worker_pss_mib:.1f} MiB per worker, "
            f"master {lots.master_pss_mib:.1f}) vs {one.total_pss_mib:.1f} MiB for 1 model "
            f"({one.worker_pss_mib:.1f} per worker): {per_model:.2f} MiB per extra model"
        )
    return out


def memory_table(runs: list[Run]) -> str:
    """Per-process RSS/PSS of each server, from its last measured run (first model)."""
    lines = ["| server | process | pid | RSS MiB | PSS MiB |", "|---|---|--:|--:|--:|"]
    seen = set()
    for r in reversed(runs):
        kind = SERVER_OF[r.case]
        if (kind, r.model) in seen or r.case == "c":
            continue
        seen.add((kind, r.model))
        for p in sorted(r.processes, key=lambda p: p["pid"]):
            lines.append(
                f"| {r.model} ({r.case}) | {p['role']} ({p['name']}) | {p['pid']} | "
                f"{p['rss_kib'] / 1024:.1f} | {p['pss_kib'] / 1024:.1f} |"
            )
    return "\n".join(lines)


def summary_line(runs: list[Run], found: list[Goal], seconds: float, path: str = "") -> str:
    measured = [g for g in found if g.met is not None]
    met = sum(1 for g in measured if g.met)
    errors = sum(r.errors for r in runs)
    where = f"; table in {path}" if path else ""
    return (
        f"bench: {len(runs)} runs in {seconds:.0f} s, {errors} errors, goals met {met} of "
        f"{len(measured)}, load average {os.getloadavg()[0]:.1f}{where}"
    )


def report(args, runs: list[Run], started: float, command: str | None = None,
           many: list[dict] | None = None, commands: dict | None = None) -> str:  # fmt: skip
    s = summarise(runs)
    command = command or f".venv/bin/python loadtests/bench.py {' '.join(sys.argv[1:])}"
    cpu = os.cpu_count()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    head = (
        f"# Benchmark: runtime `{args.runtime}`, protocol `{args.protocol}`, cache "
        f"`{args.our_cache}` for ours{' ' + ' '.join(args.our_env) if args.our_env else ''}\n\n"
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC} on {os.uname().nodename} ({cpu} cores shared "
        f"by servers, the load generator and other users); load average at the end {load}. "
        f"wrk 1 thread, {args.connections} connections, {args.duration:g} s per case "
        f"after {args.warmup:g} s warm-up, {args.rounds} interleaved round(s); "
        f"req/s is the mean over rounds, p50/p99 the median; ratios compare cases of the same "
        f"model and request shape in this run; 'other load' is the CPU (in cores) "
        f"that processes other than the server and wrk used meanwhile: noise. "
        f"Took {time.monotonic() - started:.0f} s.\n\n"
        f"Command: `{command}`\n"
    )
    found = goals(s, args.models, args.rows)
    parts = [head, table(s, args.models, args.rows, args.cases), "", "Goals:", ""]
    parts += [g.line() for g in found]
    errors = sum(x.errors for x in s.values())
    parts.append(f"- zero errors: {errors} — " + ("met" if errors == 0 else "MISSED"))
    parts += ["", "Memory:", ""] + memory_lines(runs, many or [])
    if commands:
        parts += ["", "Exact commands (servers, then each case's load):", ""]
        parts += [f"- {k}: `{v}`" for k, v in commands.items()]
    parts += ["", "Memory of each server's processes after its last run:", "", memory_table(runs)]
    parts += ["", summary_line(runs, found, time.monotonic() - started)]
    return "\n".join(parts) + "\n"


def measure_many(args) -> list[dict]:
    """PSS of our gunicorn serving 1, then ``args.many_models`` models (one store)."""
    if args.many_models <= 1:
        return []
    print(f"memory: a store of {args.many_models} models ...", flush=True)
    store = args.workdir / f"store-{args.many_models}"
    names = many_models.ensure_many(store, args.many_models)
    env = {"PREDICTOR_RUNTIME": args.runtime, **dict(kv.split("=", 1) for kv in args.our_env)}
    out = []
    for subset in (names[:1], names):
        m = many_models.measure(store, subset, args.workdir / "run" / "many", env)
        print(f"memory: {m.models} model(s): PSS {m.total_pss_mib:.1f} MiB in all, "
              f"{m.worker_pss_mib:.1f} MiB per worker", flush=True)  # fmt: skip
        out.append(asdict(m))
    return out


def load_runs(path: Path) -> list[Run]:
    """Runs saved in a bench-*.json (to render its report again)."""
    return [Run(**r) for r in json.loads(path.read_text())["runs"]]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    if args.report_from:
        saved = json.loads(args.report_from.read_text())
        print(report(args, load_runs(args.report_from), started, saved.get("command"),
                     saved.get("many_models"), saved.get("commands")))  # fmt: skip
        return 0
    runs = run_all(args)
    many = measure_many(args)
    text = report(args, runs, started, many=many, commands=args.commands)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    md = args.out / f"bench-{args.runtime}-{stamp}.md"
    md.write_text(text)
    (args.out / f"bench-{args.runtime}-latest.md").write_text(text)
    raw = {
        "command": f".venv/bin/python loadtests/bench.py {' '.join(sys.argv[1:])}",
        "args": {k: str(v) for k, v in vars(args).items()},
        "runs": [asdict(r) for r in runs],
        "many_models": many,
        "commands": args.commands,
    }
    (args.out / f"bench-{args.runtime}-{stamp}.json").write_text(json.dumps(raw, indent=1))
    print()
    print(text)
    where = md.relative_to(ROOT) if md.is_relative_to(ROOT) else md
    print(summary_line(runs, goals(summarise(runs), args.models, args.rows),
                       time.monotonic() - started, str(where)))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
