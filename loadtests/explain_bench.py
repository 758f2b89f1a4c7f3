"""TreeSHAP: shap's compiled TreeExplainer against our own exact implementation, side by side.

    .venv/bin/python loadtests/explain_bench.py [--own-rows 20] [--big-own-rows 3]

Forests: iris-rf as the demo trains it (100 trees), and a bigger one (300 trees,
depth 10, 20 features, 4,000 rows). For each: the max abs difference between the
two implementations' Shapley values (every class, every feature), additivity of
each against ``predict_proba``, and µs per row: shap one row per call (what a
one-row ``:explain`` costs) and batched, ours one row per call (loadtests/own_treeshap.py).
Both are timed in this one run, so the ratio holds whatever the machine's load.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.own_treeshap import Forest  # noqa: E402
from service.explain.methods import tree_explainer  # noqa: E402  (what the service uses)


def iris_rf() -> tuple[object, np.ndarray]:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    iris = load_iris()
    X_train, X_test, y_train, _ = train_test_split(
        iris.data, iris.target, test_size=0.25, random_state=0, stratify=iris.target
    )
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(X_train, y_train)
    return model, np.vstack([X_test, X_train])


def big_forest() -> tuple[object, np.ndarray]:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    X, y = make_classification(
        n_samples=4000, n_features=20, n_informative=10, n_classes=3, random_state=0
    )
    model = RandomForestClassifier(n_estimators=300, max_depth=10, random_state=0, n_jobs=1)
    return model.fit(X, y), X


def per_row_us(fn, rows: np.ndarray) -> float:  # noqa: ANN001
    start = time.perf_counter()
    for row in rows:
        fn(row[None, :])
    return (time.perf_counter() - start) / len(rows) * 1e6


def measure(name: str, model, X: np.ndarray, own_rows: int, shap_rows: int) -> dict:  # noqa: ANN001
    print(f"{name}: building explainers...", flush=True)
    explainer = tree_explainer(model)
    own = Forest(model)
    rows = X[:own_rows]
    print(f"{name}: ours on {own_rows} rows, one at a time...", flush=True)
    start = time.perf_counter()
    mine = np.concatenate([own.shap_values(r[None, :]) for r in rows])
    own_us = (time.perf_counter() - start) / own_rows * 1e6
    theirs = np.asarray(explainer.shap_values(rows, check_additivity=False), dtype=float)
    proba = model.predict_proba(rows)
    print(f"{name}: shap on {shap_rows} rows, one per call, then batched...", flush=True)
    many = X[:shap_rows]
    shap_one_us = per_row_us(lambda r: explainer.shap_values(r, check_additivity=False), many)
    start = time.perf_counter()
    explainer.shap_values(many, check_additivity=False)
    shap_batch_us = (time.perf_counter() - start) / shap_rows * 1e6
    expected = np.asarray(explainer.expected_value, dtype=float)
    return {
        "forest": name,
        "trees": len(own.trees),
        "leaves": int(np.mean([e.tree_.n_leaves for e in model.estimators_])),
        "max_diff": float(np.abs(mine - theirs).max()),
        "additivity_own": float(np.abs(mine.sum(1) + own.expected_value - proba).max()),
        "additivity_shap": float(np.abs(theirs.sum(1) + expected - proba).max()),
        "own_us": own_us,
        "shap_one_us": shap_one_us,
        "shap_batch_us": shap_batch_us,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--own-rows", type=int, default=20, help="rows ours explains (iris-rf)")
    parser.add_argument("--big-own-rows", type=int, default=3, help="rows ours explains (big)")
    parser.add_argument("--shap-rows", type=int, default=200, help="rows shap explains")
    args = parser.parse_args()
    results = []
    for name, build, own_rows in (
        ("iris-rf", iris_rf, args.own_rows),
        ("big forest", big_forest, args.big_own_rows),
    ):
        print(f"{name}: training...", flush=True)
        model, X = build()
        results.append(measure(name, model, X, own_rows, args.shap_rows))
    print()
    print(
        "| forest | trees | leaves/tree | max abs diff own vs shap | additivity own / shap | "
        "own µs/row | shap µs/row (1 row/call) | shap µs/row (batched) | shap faster (1 row) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['forest']} | {r['trees']} | {r['leaves']} | {r['max_diff']:.1e} | "
            f"{r['additivity_own']:.1e} / {r['additivity_shap']:.1e} | {r['own_us']:,.0f} | "
            f"{r['shap_one_us']:,.0f} | {r['shap_batch_us']:,.0f} | "
            f"x{r['own_us'] / r['shap_one_us']:,.0f} |"
        )
    worst = max(r["max_diff"] for r in results)
    speed = min(r["own_us"] / r["shap_one_us"] for r in results)
    print(
        f"summary: own TreeSHAP equals shap within {worst:.1e} on both forests; shap is at "
        f"least x{speed:,.0f} faster per row: keep shap"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
