"""What sending each response all or nothing costs (service/worker.py), in one run.

    .venv/bin/python loadtests/response_cost.py [--rounds 3] [--duration 8]

Two gunicorn servers from the repo's config, one sync worker each, in-process cache,
the demo models: (A) gunicorn's own sync worker (``GUNICORN_CMD_ARGS=--worker-class=sync``:
status line and headers, then the body, in two writes) and (B) Predictor's worker (one
write). wrk (one thread, 4 connections, loopback, no nginx: the worker alone) posts the
same V1 body again and again (cache hits: the cheapest request, so the response's share
of it is largest), A B then B A, round after round. Cost is the CPU time
(utime + stime, /proc) of the server's processes per answered request; the last column
is B - A. Then the mechanism alone, in process: a response of each class written to a
loopback TCP socket (a forked child drains it), CPU µs per response.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests import procstat  # noqa: E402
from loadtests.bench import wrk  # noqa: E402
from tools.stack import Gunicorn, train_demo  # noqa: E402

VARIANTS = {
    "A": ("gunicorn's sync worker (two writes)", {"GUNICORN_CMD_ARGS": "--worker-class=sync"}),
    "B": ("Predictor's worker (one write)", {}),
}


def measure(pod: Gunicorn, rows: int, seconds: float) -> tuple[float, int]:
    """(CPU µs per request, requests) of one wrk run against ``pod``."""
    url = f"{pod.url}/v1/models/iris:predict"
    wrk(url, "v1", rows, "repeat", 7, 1.0, 4)  # warm: the cache holds the body's rows
    pids = procstat.tree([pod.pid])
    before = procstat.cpu_sample(pids)
    result = wrk(url, "v1", rows, "repeat", 7, seconds, 4)
    cpu = procstat.cpu_used(before, procstat.cpu_sample(pids))
    if sum(result["errors"].values()):
        raise RuntimeError(f"wrk saw errors: {result['errors']}")
    return cpu * 1e6 / result["requests"], result["requests"]


def in_process(count: int, rounds: int = 5) -> dict[str, float]:
    """CPU µs (this process's, ``time.process_time``) per response of each Response
    class, written to a loopback TCP socket that a forked child drains: the mechanism
    alone, its system calls included. Median of ``rounds`` alternating passes."""
    from types import SimpleNamespace

    from gunicorn.http.wsgi import Response as Stock

    from service.worker import Response as Ours

    listener = socket.create_server(("127.0.0.1", 0))
    writer = socket.create_connection(listener.getsockname())
    reader, _ = listener.accept()
    child = os.fork()
    if child == 0:  # the drain: another process, so it takes nothing from this one's CPU
        writer.close()
        while reader.recv(1 << 20):
            pass
        os._exit(0)
    reader.close()
    req = SimpleNamespace(version=(1, 1), method="POST", should_close=lambda: False)
    cfg = SimpleNamespace(sendfile=None, is_ssl=False)
    body = b'{"predictions":["setosa"],"model":"iris","version":"1"}'
    headers = [
        ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
        ("X-Model-Name", "iris"), ("X-Model-Version", "1"), ("X-Cache", "hit"),
        ("X-Request-ID", "0123456789abcdef0123456789abcdef"),
    ]  # fmt: skip
    samples: dict[str, list[float]] = {"A": [], "B": []}
    try:
        for rnd in range(rounds + 1):  # the first pass warms up and is not counted
            for name, cls in (
                (("A", Stock), ("B", Ours)) if rnd % 2 else (("B", Ours), ("A", Stock))
            ):
                t0 = time.process_time()
                for _ in range(count):
                    resp = cls(req, writer, cfg)
                    resp.start_response("200 OK", headers)
                    resp.write(body)
                    resp.close()
                if rnd:
                    samples[name].append((time.process_time() - t0) * 1e6 / count)
    finally:
        writer.close()
        listener.close()
        os.waitpid(child, 0)
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--rows", default="1,100", help="rows per request, comma-separated")
    parser.add_argument("--in-process", type=int, default=20000, help="responses per pass")
    parser.add_argument("--only-in-process", action="store_true", help="skip the wrk runs")
    args = parser.parse_args(argv)
    rows_list = [int(r) for r in args.rows.split(",")]
    if args.only_in_process:
        micro = in_process(args.in_process)
        print(f"A {micro['A']:.2f} µs, B {micro['B']:.2f} µs per response (CPU, in process)")
        return 0

    run = Path(tempfile.mkdtemp(prefix="response-cost-"))
    store = run / "models"
    print(f"training the demo models into {store} ...", file=sys.stderr, flush=True)
    train_demo(store)
    pods = {
        key: Gunicorn(run, store, name=f"gunicorn-{key}", workers=1, inherit_settings=False,
                      env={**extra, "PREDICTOR_LOG_LEVEL": "warning"})
        for key, (_, extra) in VARIANTS.items()
    }  # fmt: skip
    results: dict[tuple[str, int], list[float]] = {}
    try:
        for pod in pods.values():
            pod.start()
        for rnd in range(args.rounds):
            order = "AB" if rnd % 2 == 0 else "BA"
            for rows in rows_list:
                for key in order:
                    us, n = measure(pods[key], rows, args.duration)
                    results.setdefault((key, rows), []).append(us)
                    print(f"  round {rnd + 1} {rows:>3} rows {key}: {us:7.1f} µs/request "
                          f"({n} requests)", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        for pod in pods.values():
            pod.stop()
    micro = in_process(args.in_process)

    print(f"\nCPU µs per request, median of {args.rounds} rounds (server processes, /proc)\n")
    print("| rows | A: " + VARIANTS["A"][0] + " | B: " + VARIANTS["B"][0] + " | B - A |")
    print("|---:|---:|---:|---:|")
    for rows in rows_list:
        a = statistics.median(results[("A", rows)])
        b = statistics.median(results[("B", rows)])
        spread = max(max(results[(k, rows)]) - min(results[(k, rows)]) for k in "AB")
        print(f"| {rows} | {a:.0f} | {b:.0f} | {b - a:+.0f} (round spread {spread:.0f}) |")
    print(
        f"\nIn process, CPU per response written to a loopback socket: A {micro['A']:.2f} µs, "
        f"B {micro['B']:.2f} µs (B - A {micro['B'] - micro['A']:+.2f} µs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
