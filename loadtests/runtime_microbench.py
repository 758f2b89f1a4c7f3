"""Per-row cost of the model call alone: scikit-learn against the compiled graph.

    .venv/bin/python loadtests/runtime_microbench.py [--seconds 0.3] [--repeats 5]

Iris LogisticRegression and a 100-tree RandomForest, compiled and verified by
service/runtimes/onnx/compile.py, then called in a loop with one row (the cache-miss request)
and with a 100-row batch. No HTTP, no validation, no cache: this is the floor
under what a request can cost. One process, one thread (onnxruntime
intra_op_num_threads=1, as served). Each figure is the median of --repeats
timed loops. By default the clock is this process's CPU time, which stays
steady when other work shares the 2 cores (--clock wall for elapsed time);
compare ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # scikit-learn's own threads, as one worker
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from service.runtimes.onnx import OnnxRuntime  # noqa: E402
from service.runtimes.onnx.compile import compile_estimator  # noqa: E402

CLOCK = time.process_time


def per_call_us(fn, seconds: float, repeats: int) -> float:
    """Median µs per call over ``repeats`` loops of about ``seconds`` each."""
    start = time.perf_counter()
    warm = 0
    while warm < 20 or time.perf_counter() - start < 0.05:
        fn()
        warm += 1
    calls = max(5, int(seconds / ((time.perf_counter() - start) / warm)))
    samples = []
    for _ in range(repeats):
        start = CLOCK()
        for _ in range(calls):
            fn()
        samples.append((CLOCK() - start) / calls * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="length of one timed loop")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: this process's CPU time (steady when other work shares the cores); wall",
    )
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    warnings.simplefilter("ignore")

    iris = load_iris()
    X, y = iris.data, iris.target
    features = [{"name": n, "type": "float"} for n in iris.feature_names]
    ranges = list(zip(X.min(0), X.max(0), strict=True))
    rng = np.random.default_rng(1)
    one = rng.uniform(X.min(0), X.max(0), size=(1, 4))
    batch = rng.uniform(X.min(0), X.max(0), size=(100, 4))

    models = {
        "LogisticRegression": LogisticRegression(max_iter=1000),
        "RandomForest (100 trees)": RandomForestClassifier(n_estimators=100, random_state=0),
    }
    header = (
        "| model | rows/call | sklearn predict | sklearn predict+proba | onnx predict "
        "| onnx predict+proba | speed-up: predict | predict+proba |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, est in models.items():
        est.fit(X, y)
        onnx_bytes, verification = compile_estimator(
            est,
            features,
            task="classification",
            sample_rows=X[:1].tolist(),
            held_out=X,
            feature_ranges=ranges,
        )
        if onnx_bytes is None:
            lines.append(f"| {name} | - | not compiled: {verification.reason} |")
            continue
        runtime = OnnxRuntime(onnx_bytes, features, "classification", est.classes_.tolist())
        t, k = args.seconds, args.repeats
        for rows in (one, batch):
            n = len(rows)
            e, rt = est, runtime
            sk = per_call_us(lambda r=rows, e=e: e.predict(r), t, k) / n
            skp = per_call_us(lambda r=rows, e=e: (e.predict(r), e.predict_proba(r)), t, k) / n
            ox = per_call_us(lambda r=rows, rt=rt: rt.run(r, False), t, k) / n
            oxp = per_call_us(lambda r=rows, rt=rt: rt.run(r, True), t, k) / n
            lines.append(
                f"| {name} | {n} | {sk:,.1f} µs | {skp:,.1f} µs | {ox:,.1f} µs "
                f"| {oxp:,.1f} µs | {sk / ox:,.0f}x | {skp / oxp:,.0f}x |"
            )
        lines.append(
            f"| {name}: verification | | rows {verification.rows_checked:,}, "
            f"mismatches {verification.mismatches}, max abs diff "
            f"{verification.max_abs_diff:.2g} | | | | | |"
        )
    print(f"Per-row cost of the model call ({args.clock} µs per row, median of repeats)\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
