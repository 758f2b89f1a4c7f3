"""Compiled graphs answer as scikit-learn does, or are refused with the reason.

Per family: compile_estimator verifies on sample + held-out + 100,000 random
rows and must report 0 mismatches and a max difference under the tolerance;
then OnnxRuntime, as the service builds it, must equal the estimator on fresh
rows it never saw (batch and single row). A model skl2onnx cannot convert and
a graph doctored to disagree are refused, never served.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import numpy_helper
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from service.runtimes.onnx import OnnxRuntime
from service.runtimes.onnx import compile as compiled
from service.runtimes.onnx.compile import compile_estimator
from service.runtimes.onnx.verify import (
    TOLERANCE,
    as_rows,
    check_rows,
    random_rows,
    sklearn_outputs,
    verify_graph,
)

FRESH_SEED = 20_261_122  # not the verification seed: rows the graph was never checked on


@pytest.fixture(autouse=True)
def _one_openmp_thread():
    """HistGradientBoosting's OpenMP threads crawl on 2 busy cores; one is plenty here."""
    with threadpool_limits(limits=1):
        yield


def _dataset(name: str):
    loader = {"iris": load_iris, "iris-binary": load_iris, "cancer": load_breast_cancer}
    data = loader.get(name, load_diabetes)()
    X, y = data.data, data.target
    if name == "iris-binary":  # classes 1 and 2: labels that are not indices
        X, y = X[y > 0], y[y > 0]
    features = [{"name": str(n), "type": "float"} for n in data.feature_names]
    ranges = [(float(lo), float(hi)) for lo, hi in zip(X.min(0), X.max(0), strict=True)]
    return X, y, features, ranges


def _compile(est, X, features, ranges, task):
    return compile_estimator(
        est,
        features,
        task=task,
        sample_rows=X[:3].tolist(),
        held_out=X,
        feature_ranges=ranges,
    )


def _assert_verified(verification, n_held_out: int) -> None:
    assert verification.ok, verification.reason
    assert verification.runtime == "onnx"
    assert verification.reason is None
    assert verification.mismatches == 0
    assert verification.rows_checked >= 100_000 + n_held_out
    assert verification.rows_by_source["random"] == 100_000
    assert verification.max_abs_diff <= verification.tolerance == TOLERANCE
    assert verification.converter.startswith("skl2onnx ")
    assert verification.runtime_version.startswith("onnxruntime ")
    json.dumps(verification.to_dict())  # goes into manifest.json as is


CLS, REG = "classification", "regression"
FAMILIES = [
    # estimator, dataset, task, exact (bit-identical values expected: trees)
    pytest.param(
        lambda: LogisticRegression(max_iter=1000), "iris", CLS, False, id="logistic-regression"
    ),
    pytest.param(
        lambda: LogisticRegression(max_iter=1000), "iris-binary", CLS, False, id="lr-binary"
    ),
    pytest.param(
        lambda: RandomForestClassifier(100, random_state=0), "iris", CLS, True, id="random-forest"
    ),
    pytest.param(
        lambda: RandomForestClassifier(30, max_depth=3, random_state=0),
        "cancer",
        CLS,
        True,
        id="random-forest-shallow-binary",
    ),
    pytest.param(
        lambda: GradientBoostingClassifier(n_estimators=50, random_state=0),
        "iris",
        CLS,
        False,
        id="gradient-boosting",
    ),
    pytest.param(
        lambda: HistGradientBoostingClassifier(max_iter=50, random_state=0),
        "iris",
        CLS,
        False,
        id="hist-gradient-boosting",
    ),
    pytest.param(
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "cancer",
        CLS,
        False,
        id="pipeline-scaler-lr",
    ),
    pytest.param(
        lambda: RandomForestRegressor(50, random_state=0),
        "diabetes",
        REG,
        True,
        id="random-forest-regressor",
    ),
    pytest.param(
        lambda: GradientBoostingRegressor(n_estimators=50, random_state=0),
        "diabetes",
        REG,
        True,
        id="gradient-boosting-regressor",
    ),
    pytest.param(lambda: Ridge(alpha=0.5), "diabetes", REG, False, id="ridge"),
]


@pytest.mark.parametrize(("make", "dataset", "task", "exact"), FAMILIES)
def test_family_compiles_and_answers_like_sklearn(make, dataset, task, exact) -> None:
    X, y, features, ranges = _dataset(dataset)
    est = make().fit(X, y)

    onnx_bytes, verification = _compile(est, X, features, ranges, task)

    assert onnx_bytes is not None, verification.reason
    _assert_verified(verification, len(X))
    assert verification.input_dtype == "float64"
    if exact:  # trees: same comparisons, same sums in the same order as scikit-learn
        assert verification.max_abs_diff == 0.0

    classes = est.classes_.tolist() if task == "classification" else None
    runtime = OnnxRuntime(onnx_bytes, features, task, classes)
    fresh = random_rows(features, ranges, 3000, np.random.default_rng(FRESH_SEED))
    predictions, proba = runtime.run(fresh, with_proba=True)
    if task == "classification":
        np.testing.assert_array_equal(predictions, est.predict(fresh))
        assert predictions.dtype == est.predict(fresh).dtype
        np.testing.assert_allclose(proba, est.predict_proba(fresh), rtol=0, atol=TOLERANCE)
        assert runtime.run(fresh[:5], with_proba=False)[1] is None
    else:
        assert proba is None
        assert predictions.shape == (len(fresh),)
        np.testing.assert_allclose(predictions, est.predict(fresh), rtol=TOLERANCE)
    for row in fresh[:20]:  # the cache-miss request: one row
        one, _ = runtime.run(row[None, :], with_proba=False)
        if exact or task == "classification":  # labels, and tree sums, are bit-identical
            assert one.tolist() == est.predict(row[None, :]).tolist()
        else:  # a float regression's last bit depends on the CPU's SIMD path (seen: 1 ULP)
            np.testing.assert_allclose(one, est.predict(row[None, :]), rtol=TOLERANCE)


def test_random_forest_ties_go_to_the_first_class_as_in_sklearn() -> None:
    """A 50/50 vote: skl2onnx's own converter sums 0.01-weights in float32 and
    picks the other class; this graph must not."""
    X, y, features, ranges = _dataset("iris")
    est = RandomForestClassifier(100, random_state=0).fit(X, y)
    onnx_bytes, _ = _compile(est, X, features, ranges, "classification")
    fresh = random_rows(features, ranges, 20_000, np.random.default_rng(FRESH_SEED))
    expected = est.predict_proba(fresh)
    top2 = np.sort(expected, axis=1)[:, -2:]
    ties = fresh[top2[:, 0] == top2[:, 1]]
    assert len(ties) > 50  # the check below means something

    predictions, proba = OnnxRuntime(onnx_bytes, features, "classification", [0, 1, 2]).run(
        ties, with_proba=True
    )
    np.testing.assert_array_equal(predictions, est.predict(ties))
    np.testing.assert_array_equal(proba, est.predict_proba(ties))


def _mixed_data(n: int = 600):
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "age (years)": rng.integers(18, 80, n),
            "income": rng.normal(50.0, 12.0, n),
            "city name": rng.choice(["Paris", "Lyon", "Nice", "Lille"], n),
            "member": rng.integers(0, 2, n).astype(bool),
            "plan": rng.choice(["basic", "pro"], n),
        }
    )
    age, income = frame["age (years)"], frame["income"]
    score = (income - 50) / 12 + (frame["city name"] == "Lyon") - 0.02 * age
    y = np.where(score + rng.normal(0, 0.5, n) > -0.5, "buy", "skip")
    features = [
        {"name": "age (years)", "type": "int", "minimum": 18, "maximum": 79},
        {"name": "income", "type": "float", "minimum": 10.0, "maximum": 90.0},
        {"name": "city name", "type": "string"},  # categories come from the fitted encoder
        {"name": "member", "type": "bool"},
        {"name": "plan", "type": "string", "categories": ["basic", "pro"]},
    ]
    return frame, y, features


@pytest.mark.parametrize(
    "final",
    [
        lambda: LogisticRegression(max_iter=1000),
        lambda: GradientBoostingClassifier(n_estimators=30),
    ],
    ids=["logistic-regression", "gradient-boosting"],
)
def test_column_transformer_over_numbers_and_strings(final) -> None:
    frame, y, features = _mixed_data()
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["age (years)", "income", "member"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city name", "plan"]),
                    ]
                ),
            ),
            ("model", final()),
        ]
    ).fit(frame, y)
    held_out = frame.to_numpy(dtype=object)

    onnx_bytes, verification = compile_estimator(
        pipe, features, task="classification", sample_rows=held_out[:2].tolist(), held_out=held_out
    )

    assert onnx_bytes is not None, verification.reason
    _assert_verified(verification, len(held_out))
    assert verification.input_dtype == "mixed"
    assert verification.unknown_categories == "ignored"  # and both runtimes agreed on them

    runtime = OnnxRuntime(onnx_bytes, features, "classification", pipe.classes_.tolist())
    ranges = [(18, 79), (10.0, 90.0), ["Paris", "Lyon", "Nice", "Lille"], (0, 1), ["basic", "pro"]]
    fresh = random_rows(features, ranges, 2000, np.random.default_rng(FRESH_SEED))
    assert fresh.dtype == object
    predictions, proba = runtime.run(fresh, with_proba=True)
    expected, expected_proba = sklearn_outputs(pipe, features, "classification", fresh)
    np.testing.assert_array_equal(predictions, expected)
    assert set(predictions) <= {"buy", "skip"}
    np.testing.assert_allclose(proba, expected_proba, rtol=0, atol=TOLERANCE)
    # As the validation layer hands a request over: raw JSON values in an object array.
    row = as_rows([[30, 61.5, "Lyon", True, "pro"]], features)
    direct = pipe.predict(
        pd.DataFrame([[30, 61.5, "Lyon", True, "pro"]], columns=[f["name"] for f in features])
    )
    assert runtime.run(row, with_proba=False)[0].tolist() == direct.tolist()


def test_unknown_category_that_sklearn_refuses_is_flagged() -> None:
    frame, y, features = _mixed_data(300)
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["age (years)", "income", "member"]),
                        ("cat", OneHotEncoder(handle_unknown="error"), ["city name", "plan"]),
                    ]
                ),
            ),
            ("model", LogisticRegression()),
        ]
    ).fit(frame, y)
    held_out = frame.to_numpy(dtype=object)
    onnx_bytes, verification = compile_estimator(
        pipe,
        features,
        task="classification",
        sample_rows=held_out[:2].tolist(),
        random_rows=5_000,
    )
    assert verification.ok, verification.reason
    assert verification.unknown_categories == "error"
    # Both runtimes raise on an unseen category: the service must refuse it first.
    row = as_rows([[30, 61.5, "Marseille", True, "pro"]], features)
    runtime = OnnxRuntime(onnx_bytes, features, "classification", pipe.classes_.tolist())
    with pytest.raises(Exception, match="(?i)unknown categor"):
        runtime.run(row, with_proba=False)
    with pytest.raises(ValueError, match="(?i)unknown categor"):
        sklearn_outputs(pipe, features, "classification", row)


def test_bool_classes_come_back_as_bools() -> None:
    X, y, features, ranges = _dataset("cancer")
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y == 1)
    onnx_bytes, verification = compile_estimator(
        est,
        features,
        task="classification",
        sample_rows=X[:2].tolist(),
        feature_ranges=ranges,
        random_rows=5_000,
    )
    assert verification.ok, verification.reason
    predictions, _ = OnnxRuntime(onnx_bytes, features, "classification", [False, True]).run(
        X[:50], with_proba=False
    )
    assert predictions.dtype == bool
    np.testing.assert_array_equal(predictions, est.predict(X[:50]))


class MajorityOfFirstFeature(ClassifierMixin, BaseEstimator):
    """A custom estimator: skl2onnx has no converter for it."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.cut_ = float(np.median(X[:, 0]))
        return self

    def predict(self, X):
        return self.classes_[(np.asarray(X)[:, 0] > self.cut_).astype(int)]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (MajorityOfFirstFeature, "MajorityOfFirstFeature"),
        (
            lambda: HistGradientBoostingClassifier(max_iter=5, categorical_features=[0]),
            "categorical",
        ),
    ],
    ids=["custom-estimator", "hgb-categorical-splits"],
)
def test_estimator_that_cannot_convert_serves_with_sklearn(make, expected) -> None:
    X, y, features, ranges = _dataset("iris")
    X = X.copy()
    X[:, 0] = np.round(X[:, 0])  # small integer codes, valid as categories too
    est = make().fit(X, y)

    onnx_bytes, verification = compile_estimator(
        est, features, task="classification", sample_rows=X[:2].tolist(), feature_ranges=ranges
    )

    assert onnx_bytes is None
    assert not verification.ok
    assert verification.runtime == "sklearn"
    assert "conversion failed" in verification.reason
    assert expected in verification.reason
    json.dumps(verification.to_dict())


def _doctor_initializer(onnx_bytes: bytes) -> bytes:
    """Change one coefficient of the largest floating-point initializer."""
    model = onnx.load_from_string(onnx_bytes)
    floats = [
        t for t in model.graph.initializer
        if t.data_type in (onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT)
    ]  # fmt: skip
    target = max(floats, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(target).copy()
    values.flat[0] += 0.5
    target.CopyFrom(numpy_helper.from_array(values, target.name))
    return model.SerializeToString()


def _doctor_leaf(onnx_bytes: bytes) -> bytes:
    """Move one leaf of one tree: the smallest edit a tampered forest could carry."""
    model = onnx.load_from_string(onnx_bytes)
    node = next(n for n in model.graph.node if n.op_type == "TreeEnsemble")
    attr = next(a for a in node.attribute if a.name == "leaf_weights")
    weights = numpy_helper.to_array(attr.t).copy()
    weights[0] += 0.9
    attr.t.CopyFrom(numpy_helper.from_array(weights))
    return model.SerializeToString()


@pytest.mark.parametrize(
    ("make", "doctor"),
    [
        (lambda: LogisticRegression(max_iter=1000), _doctor_initializer),
        (lambda: RandomForestClassifier(20, random_state=0), _doctor_leaf),
    ],
    ids=["lr-coefficient", "rf-one-leaf"],
)
def test_doctored_graph_is_refused_at_load_and_at_publish(monkeypatch, make, doctor) -> None:
    X, y, features, ranges = _dataset("iris")
    est = make().fit(X, y)
    onnx_bytes, verification = _compile(est, X, features, ranges, "classification")
    assert verification.ok
    rows, _ = check_rows(est, features, X[:3].tolist(), X, ranges, 100_000, seed=1)
    doctored = doctor(onnx_bytes)

    # At load: the stored graph is checked again against the estimator.
    assert verify_graph(onnx_bytes, est, features, "classification", rows).ok
    refused = verify_graph(doctored, est, features, "classification", rows)
    assert not refused.ok
    assert refused.runtime == "sklearn"
    assert refused.mismatches > 0
    assert refused.max_abs_diff > TOLERANCE
    assert "rows differ" in refused.reason

    # At publish: a converter that produced this graph gets no bytes out.
    real_convert = compiled.convert
    monkeypatch.setattr(compiled, "convert", lambda *a, **k: doctor(real_convert(*a, **k)))
    onnx_bytes, verification = _compile(est, X, features, ranges, "classification")
    assert onnx_bytes is None
    assert not verification.ok
    assert verification.mismatches > 0
    assert "rows differ" in verification.reason


def test_session_is_created_lazily_and_again_after_fork() -> None:
    X, y, features, ranges = _dataset("iris")
    est = LogisticRegression(max_iter=1000).fit(X, y)
    onnx_bytes, _ = compile_estimator(
        est, features, task="classification", sample_rows=X[:2].tolist(), random_rows=1000
    )
    runtime = OnnxRuntime(onnx_bytes, features, "classification", [0, 1, 2], intra_op_threads=1)
    assert runtime._session is None  # nothing built before the worker forks
    runtime.run(X[:1], with_proba=False)
    first = runtime._session
    assert first is not None
    runtime.run(X[:1], with_proba=False)
    assert runtime._session is first
    runtime._pid = -1  # as seen from a forked child
    runtime.run(X[:1], with_proba=False)
    assert runtime._session is not first


def test_random_rows_stay_within_the_schema() -> None:
    frame, _, features = _mixed_data(50)
    ranges = [(18, 79), (10.0, 90.0), ["Paris", "Lyon"], (0, 1), ["basic", "pro"]]
    rows = random_rows(features, ranges, 5000, np.random.default_rng(0))
    ages = rows[:, 0].astype(float)
    assert ages.min() >= 18 and ages.max() <= 79 and np.all(ages == np.round(ages))
    income = rows[:, 1].astype(float)
    assert income.min() >= 10.0 and income.max() <= 90.0
    assert set(rows[:, 2]) == {"Paris", "Lyon"}
    assert set(rows[:, 3].astype(float)) == {0.0, 1.0}
    assert set(rows[:, 4]) == {"basic", "pro"}
