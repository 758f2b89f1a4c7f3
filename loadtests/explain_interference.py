"""Does explaining slow predictions down? Predict p99 alone, then beside concurrent explains.

One gunicorn (2 workers, demo models) on loopback. Phase A: C clients send
``:predict`` (iris-rf, one row) for D seconds. Phase B: the same, while one more
client sends ``:explain`` (iris-rf, TreeSHAP) back to back. Prints p50/p99 of
predict in each phase and their ratio (same run, so the machine's noise
cancels as far as it can).

    .venv/bin/python loadtests/explain_interference.py [--seconds 10] [--clients 2]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "models"
        print("training demo models...", flush=True)
        train_demo(ModelStore(store))
        server = Gunicorn(Path(tmp) / "run", store, workers=2).start()
        try:
            for _ in range(4):  # warm both workers' explainers (lazy estimator load)
                requests.post(server.url + "/v1/models/iris-rf:explain", json=ROW, timeout=60)
            rows = []
            for label, explain in (("predict alone", False), ("predict + explains", True),
                                   ("predict alone (again)", False)):  # fmt: skip
                print(f"{label}: {args.seconds:.0f} s...", flush=True)
                lat, n_explain = phase(server.url, args.seconds, args.clients, explain)
                rows.append((label, len(lat), quantile(lat, 0.5), quantile(lat, 0.99), n_explain))
        finally:
            server.stop()
    print(f"\n{'phase':<24}{'predicts':>9}{'p50 ms':>9}{'p99 ms':>9}{'explains':>9}")
    for label, n, p50, p99, ne in rows:
        print(f"{label:<24}{n:>9}{p50 * 1e3:>9.2f}{p99 * 1e3:>9.2f}{ne:>9}")
    base = statistics.mean([rows[0][3], rows[2][3]])
    print(f"summary: predict p99 {rows[1][3] * 1e3:.2f} ms with explains vs "
          f"{base * 1e3:.2f} ms without (x{rows[1][3] / base:.2f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
