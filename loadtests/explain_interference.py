"""Does explaining slow predictions down? Predict p99 alone, then beside concurrent explains.

One gunicorn (2 workers, demo models) on loopback per setting of
PREDICTOR_EXPLAIN_NICE: 0 (explains in the request thread, same CPU priority as
predictions) and the default (a niced explain thread per worker). For each:
C clients send ``:predict`` (iris-rf, one row) for D seconds alone, then while
one more client sends ``:explain`` (iris-rf, TreeSHAP) back to back, then alone
again. Prints p50/p99 of predict per phase and the ratio with/without explains
(same server, phases interleaved, so the machine's noise cancels as far as it
can), and writes loadtests/results/explain-interference-latest.md.

    .venv/bin/python loadtests/explain_interference.py [--seconds 10] [--clients 2]
    make bench-explain        (also run by make bench)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.demo import train_demo  # noqa: E402
from service.store import ModelStore  # noqa: E402
from tools.stack import Gunicorn  # noqa: E402

ROW = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
RESULTS = Path(__file__).resolve().parent / "results"


def hammer(url: str, stop: threading.Event, out: list[float], path: str) -> None:
    session = requests.Session()
    while not stop.is_set():
        start = time.perf_counter()
        response = session.post(url + path, json=ROW, timeout=30)
        out.append(time.perf_counter() - start)
        assert response.status_code == 200, response.text


def phase(url: str, seconds: float, clients: int, explain: bool) -> tuple[list[float], int]:
    stop = threading.Event()
    predicts: list[list[float]] = [[] for _ in range(clients)]
    explains: list[float] = []
    threads = [
        threading.Thread(target=hammer, args=(url, stop, p, "/v1/models/iris-rf:predict"))
        for p in predicts
    ]
    if explain:
        threads.append(
            threading.Thread(
                target=hammer, args=(url, stop, explains, "/v1/models/iris-rf:explain")
            )
        )
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sorted(x for p in predicts for x in p), len(explains)


def quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(tmp: Path, store: Path, nice: str, args: argparse.Namespace) -> list[tuple]:
    """The three phases against one server started with PREDICTOR_EXPLAIN_NICE=nice."""
    env = {"PREDICTOR_EXPLAIN_NICE": nice}
    server = Gunicorn(tmp / f"run-{nice}", store, workers=2, env=env).start()
    try:
        for _ in range(4):  # warm both workers' explainers (lazy estimator load)
            requests.post(server.url + "/v1/models/iris-rf:explain", json=ROW, timeout=60)
        rows = []
        for label, explain in (("predict alone", False), ("predict + explains", True),
                               ("predict alone (again)", False)):  # fmt: skip
            print(f"EXPLAIN_NICE={nice}: {label}, {args.seconds:.0f} s...", flush=True)
            lat, n_explain = phase(server.url, args.seconds, args.clients, explain)
            rows.append((nice, label, len(lat), quantile(lat, 0.5), quantile(lat, 0.99), n_explain))
    finally:
        server.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--nice", default="0,10", help="EXPLAIN_NICE values, one server each")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "models"
        print("training demo models...", flush=True)
        train_demo(ModelStore(store))
        for nice in args.nice.split(","):
            rows += measure(Path(tmp), store, nice, args)
    lines = [
        f"# Predict p99 with and without concurrent explains ({time.strftime('%Y-%m-%d %H:%M')} "
        f"UTC, load average {Path('/proc/loadavg').read_text().split()[0]})",
        "",
        f"gunicorn 2 sync workers, {args.clients} predict clients (iris-rf :predict, one row), "
        f"1 explain client (iris-rf :explain) in the middle phase, {args.seconds:g} s per phase.",
        f"Command: `.venv/bin/python loadtests/explain_interference.py {' '.join(sys.argv[1:])}`",
        "",
        "| EXPLAIN_NICE | phase | predicts | p50 ms | p99 ms | explains |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3] * 1e3:.2f} | {r[4] * 1e3:.2f} | {r[5]} |"
              for r in rows]  # fmt: skip
    summary = []
    for nice in args.nice.split(","):
        mine = [r for r in rows if r[0] == nice]
        base = statistics.mean([mine[0][4], mine[2][4]])
        summary.append(f"EXPLAIN_NICE={nice}: p99 {mine[1][4] * 1e3:.1f} ms with explains vs "
                       f"{base * 1e3:.1f} ms without (x{mine[1][4] / base:.2f}, "
                       f"{mine[1][5]} explains)")  # fmt: skip
    text = "\n".join(lines) + "\n\n" + "\n".join(f"- {s}" for s in summary) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "explain-interference-latest.md").write_text(text)
    print("\n" + text)
    print("summary: predict " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
