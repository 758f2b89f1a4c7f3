"""gRPC side by side: our Open Inference Protocol over gRPC against MLServer's, and against
our own REST V2, with the same stock client library (tritonclient) and the same rows.

    .venv/bin/python loadtests/grpc_bench.py [--models iris,iris-rf] [--requests 3000] ...
    make bench-grpc

Cases, per model (1-row requests):

  (g) ours, gRPC              our gunicorn's gRPC server (PREDICTOR_GRPC_WORKERS=1, the default)
  (h) ours, gRPC, 2 processes PREDICTOR_GRPC_WORKERS=2
  (i) ours, REST V2           our gunicorn (2 sync workers), tritonclient.http
  (j) MLServer 1.7.1, gRPC    defaults (1 inference worker), tritonclient.grpc
  (k) MLServer 1.7.1, REST V2 tritonclient.http

Each case: ``--clients`` client processes (spawned: grpcio does not survive fork), each
sending ``--requests / --clients`` requests back to back (bounded by count, with a time
limit that only stops a hang); requests/s from the wall time, p50/p99 from every call's
latency, server CPU per request from /proc (the server's whole process tree). Cases take
turns round after round so machine drift cancels in the ratios; the table goes to
loadtests/results/grpc-bench-<time>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests import procstat  # noqa: E402
from loadtests.bench import BENCH, RESULTS, ensure_store, export_estimator  # noqa: E402
from loadtests.servers import MLServer  # noqa: E402
from tools.stack import Gunicorn, free_port, wait_until  # noqa: E402

CASES = {
    "g": "ours, gRPC",
    "h": "ours, gRPC, 2 processes",
    "i": "ours, REST V2 (gunicorn)",
    "j": "MLServer 1.7.1, gRPC",
    "k": "MLServer 1.7.1, REST V2",
}
ROWS = [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.7, 3.0, 5.2, 2.3], [6.3, 2.9, 5.6, 1.8]]


@dataclass
class Result:
    model: str
    case: str
    round: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float


def client_loop(args: tuple[str, str, str, int, float]) -> tuple[list[float], int]:
    """One client process: ``count`` calls back to back; latencies (s) and error count."""
    kind, address, model, count, limit = args
    import numpy as np

    if kind == "grpc":
        import tritonclient.grpc as client_lib
    else:
        import tritonclient.http as client_lib
    client = client_lib.InferenceServerClient(address)
    latencies, errors = [], 0
    deadline = time.monotonic() + limit
    for i in range(count):
        if time.monotonic() > deadline:
            break
        x = client_lib.InferInput("input-0", [1, 4], "FP64")
        row = np.array([ROWS[i % len(ROWS)]], dtype=np.float64)
        # REST: JSON tensors (MLServer 1.7.1's REST has no binary tensor extension).
        if kind == "grpc":
            x.set_data_from_numpy(row)
        else:
            x.set_data_from_numpy(row, binary_data=False)
        start = time.perf_counter()
        try:
            result = client.infer(model, [x])
            if result.as_numpy("predict") is None:
                errors += 1
        except Exception:  # counted, not fatal: the table shows errors per case
            errors += 1
        latencies.append(time.perf_counter() - start)
    client.close()
    return latencies, errors


class Ours:
    """Our gunicorn (HTTP) with its gRPC server processes, from tools/stack.py."""

    def __init__(self, store: Path, grpc_workers: int, runtime: str) -> None:
        run = BENCH / "grpc-ours"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        self.gunicorn = Gunicorn(
            run, store, workers=None, inherit_settings=False, grpc_port=free_port(),
            env={"PREDICTOR_GRPC_WORKERS": str(grpc_workers), "PREDICTOR_RUNTIME": runtime,
                 "PREDICTOR_LOG_LEVEL": "warning"},
        )  # fmt: skip

    def start(self) -> None:
        self.gunicorn.start(timeout=120)

    def address(self, kind: str) -> str:
        return self.gunicorn.grpc_address if kind == "grpc" else self.gunicorn.address

    def pids(self) -> list[int]:
        return [self.gunicorn.pid]

    def stop(self) -> None:
        self.gunicorn.stop()


class Theirs:
    """MLServer 1.7.1 at its defaults (loadtests/servers.py), gRPC port remembered."""

    def __init__(self, model: str, model_file: Path) -> None:
        self.server = MLServer(BENCH / "grpc-mlserver", model, model_file)
        (BENCH / "grpc-mlserver").mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.server.start()
        settings = json.loads((self.server.workdir / "mlserver" / "settings.json").read_text())
        self.grpc_port = settings["grpc_port"]
        self.server.wait_ready(self.server.model_name, timeout=120)

    def address(self, kind: str) -> str:
        return f"127.0.0.1:{self.grpc_port if kind == 'grpc' else self.server.port}"

    def pids(self) -> list[int]:
        return self.server.root_pids()

    def stop(self) -> None:
        self.server.stop()


def wait_grpc(address: str, model: str, timeout: float = 90.0) -> None:
    import tritonclient.grpc as g

    def ready() -> bool:
        try:
            with g.InferenceServerClient(address) as c:
                return c.is_model_ready(model)
        except Exception:  # not up yet
            return False

    wait_until(ready, timeout, f"gRPC {address} ready for {model}", interval=0.25)


def run_case(server, kind: str, model: str, case: str, rnd: int, args) -> Result:
    address = server.address(kind)
    if kind == "grpc":
        wait_grpc(address, model)
    per_client = max(1, args.requests // args.clients)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.clients) as pool:
        warm = min(50, per_client)
        pool.map(client_loop, [(kind, address, model, warm, args.limit)] * args.clients)
        pids = procstat.tree(server.pids())
        before = procstat.cpu_sample(pids)
        start = time.perf_counter()
        parts = pool.map(
            client_loop, [(kind, address, model, per_client, args.limit)] * args.clients
        )
        seconds = time.perf_counter() - start
        after = procstat.cpu_sample(procstat.tree(server.pids()))
    latencies = sorted(t for lat, _ in parts for t in lat)
    errors = sum(e for _, e in parts)
    n = len(latencies)
    cpu = procstat.cpu_used(before, after)
    result = Result(
        model, case, rnd, n, errors, round(seconds, 2), round(n / seconds, 1),
        round(statistics.median(latencies) * 1e3, 2), round(latencies[int(n * 0.99) - 1] * 1e3, 2),
        round(cpu / max(n, 1) * 1e6, 0),
    )  # fmt: skip
    print(
        f"  {model:8} ({case}) {CASES[case]:26} {result.rps:8.0f} req/s  p50 {result.p50_ms:6.2f}"
        f" ms  p99 {result.p99_ms:6.2f} ms  CPU {result.cpu_us_per_req:6.0f} µs/req"
        f"  errors {errors}",
        flush=True,
    )
    return result


def table(results: list[Result], models: list[str], cases: list[str]) -> str:
    lines = [
        "| model | case | req/s | p50 ms | p99 ms | errors | CPU µs/req | vs (j) MLServer gRPC "
        "| CPU-eff. vs (j) | vs (i) our REST |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for model in models:
        agg = {}
        for case in cases:
            rs = [r for r in results if r.model == model and r.case == case]
            if rs:
                agg[case] = (
                    statistics.median(r.rps for r in rs),
                    statistics.median(r.p50_ms for r in rs),
                    statistics.median(r.p99_ms for r in rs),
                    sum(r.errors for r in rs),
                    statistics.median(r.cpu_us_per_req for r in rs),
                )

        def ratio(case: str, base: str, i: int, inverse: bool = False, agg: dict = agg) -> str:
            if case not in agg or base not in agg or not agg[base][i] or not agg[case][i]:
                return "–"
            value = agg[base][i] / agg[case][i] if inverse else agg[case][i] / agg[base][i]
            return f"{value:.2f}×"

        for case, (rps, p50, p99, errors, cpu) in agg.items():
            lines.append(
                f"| {model} | ({case}) {CASES[case]} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | "
                f"{errors} | {cpu:,.0f} | {ratio(case, 'j', 0)} | {ratio(case, 'j', 4, True)} | "
                f"{ratio(case, 'i', 0)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="iris,iris-rf")
    p.add_argument("--cases", default="ghijk")
    p.add_argument("--requests", type=int, default=3000, help="measured requests per case")
    p.add_argument("--clients", type=int, default=4, help="client processes (concurrency)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--limit", type=float, default=120.0, help="seconds before a case is cut")
    p.add_argument("--runtime", default="auto", help="PREDICTOR_RUNTIME of our service")
    p.add_argument("--store", type=Path, default=BENCH / "store")
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    cases = [c for c in args.cases if c in CASES]
    ensure_store(args.store, models, args.runtime)
    started = time.time()
    results: list[Result] = []
    for model in models:
        exported = export_estimator(args.store, model, BENCH)
        for rnd in range(args.rounds):
            order = cases if rnd % 2 == 0 else list(reversed(cases))
            print(f"{model}: round {rnd + 1}/{args.rounds}", flush=True)
            for case in order:
                if case in "ghi":
                    server = Ours(args.store, 2 if case == "h" else 1, args.runtime)
                else:
                    server = Theirs(model, exported)
                server.start()
                try:
                    kind = "grpc" if case in "ghj" else "http"
                    results.append(run_case(server, kind, model, case, rnd, args))
                finally:
                    server.stop()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python loadtests/grpc_bench.py " + " ".join(argv or sys.argv[1:])
    text = (
        f"# gRPC benchmark {stamp}\n\n`{command.strip()}` on {os.cpu_count()} cores, "
        f"{args.clients} client processes, {args.requests} requests per case, "
        f"{args.rounds} rounds (medians)\n\n{table(results, models, cases)}\n"
    )
    (RESULTS / f"grpc-bench-{stamp}.md").write_text(text)
    (RESULTS / f"grpc-bench-{stamp}.json").write_text(
        json.dumps([asdict(r) for r in results], indent=1)
    )
    print("\n" + text)
    total = sum(r.requests for r in results)
    errors = sum(r.errors for r in results)
    print(
        f"grpc bench: {len(results)} runs, {total} requests, {errors} errors in "
        f"{time.time() - started:.0f} s; table in loadtests/results/grpc-bench-{stamp}.md"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
