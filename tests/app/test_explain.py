"""``:explain`` as a user calls it: additivity, agreement with ``:predict``, refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from service import metrics
from service.app import create_app
from service.auth import hash_key
from service.manifest import Feature
from service.publish import publish_estimator
from service.settings import Settings
from service.store import ModelStore
from tests.helpers import IRIS_ROWS, assert_json_error

TOL = 1e-6
DIABETES_ROWS = [
    [0.038, 0.05, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017],
    [-0.001, -0.044, -0.051, -0.026, -0.008, -0.019, 0.074, -0.039, -0.068, -0.092],
    [0.085, 0.05, 0.044, -0.005, -0.045, -0.034, -0.032, -0.002, 0.002, -0.025],
]


def explain_and_predict(client, name: str, rows: list, **extra) -> tuple[dict, dict]:
    explained = client.post(f"/v1/models/{name}:explain", json={"instances": rows, **extra})
    assert explained.status_code == 200, explained.get_json()
    predicted = client.post(
        f"/v1/models/{name}:predict", json={"instances": rows, "probabilities": True}
    )
    assert predicted.status_code == 200
    return explained.get_json(), predicted.get_json()


def assert_additive(row: dict, n_features: int) -> None:
    assert len(row["contributions"]) == n_features
    assert abs(row["base_value"] + sum(row["contributions"]) - row["output"]) <= TOL


@pytest.mark.parametrize(
    ("name", "rows", "kind", "method"),
    [
        ("iris", IRIS_ROWS, "probability", "exact_shapley"),
        ("iris-rf", IRIS_ROWS, "probability", "tree_shap"),
        ("diabetes", DIABETES_ROWS, "value", "tree_shap"),
    ],
)
def test_demo_models_add_up_and_agree_with_predict(client, name, rows, kind, method):
    body, predicted = explain_and_predict(client, name, rows)
    assert body["model"] == name and body["version"] == "1"
    n = len(body["features"])
    assert n == len(rows[0])
    for i, row in enumerate(body["explanations"]):
        assert_additive(row, n)
        assert row["output_kind"] == kind and row["method"] == method
        assert row["prediction"] == predicted["predictions"][i]
        if kind == "value":
            assert abs(row["output"] - predicted["predictions"][i]) <= TOL
            continue
        # The predicted class's probability, exactly the number :predict reports.
        p = predicted["probabilities"][i][row["prediction"]]
        assert abs(row["probability"] - p) <= TOL
        if kind == "probability":
            assert abs(row["output"] - p) <= TOL


def test_logistic_regression_output_is_the_predicted_class_logit(client, app):
    """iris (multinomial LR) asked for log-odds: output is the class's logit (method linear);
    softmax of the logits = :predict."""
    body, predicted = explain_and_predict(client, "iris", IRIS_ROWS, output_kind="log_odds")
    assert {row["method"] for row in body["explanations"]} == {"linear"}
    model = app.extensions["predictor"].registry.get("iris")
    estimator = model.runtime.estimator if hasattr(model.runtime, "estimator") else None
    if estimator is None:
        from service.artifacts import load_estimator
        from service.store import ModelStore as _S

        store = _S(app.extensions["predictor"].settings.MODEL_STORE)
        estimator = load_estimator(store.version_dir("iris", "1"), model.manifest, None)
    logits = estimator.decision_function(np.array(IRIS_ROWS))
    labels = model.labels
    for i, row in enumerate(body["explanations"]):
        k = labels.index(row["prediction"])
        assert abs(row["output"] - logits[i, k]) <= TOL
        softmax = np.exp(logits[i]) / np.exp(logits[i]).sum()
        assert abs(softmax[k] - predicted["probabilities"][i][row["prediction"]]) <= TOL


def test_named_instances_and_pinned_version(client):
    names = client.get("/v1/models/iris").get_json()["features"]
    names = [f["name"] if isinstance(f, dict) else f for f in names]
    named = dict(zip(names, IRIS_ROWS[1], strict=True))
    a = client.post("/v1/models/iris/versions/1:explain", json={"instances": [named]})
    b = client.post("/v1/models/iris:explain", json={"instances": [IRIS_ROWS[1]]})
    assert a.status_code == b.status_code == 200
    assert a.get_json()["explanations"] == b.get_json()["explanations"]


# --- a Pipeline on a string + number DataFrame ------------------------------
def mixed_frame(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "city": rng.choice(["paris", "lyon", "nice", "lille"], n),
            "age": rng.integers(18, 80, n).astype(float),
            "income": rng.normal(40.0, 12.0, n),
        }
    )
    score = (frame["city"] == "paris") * 1.5 + (frame["age"] - 50) / 15 + rng.normal(0, 0.7, n)
    return frame, np.where(score > 0.4, "yes", "no")


MIXED_FEATURES = [
    Feature(name="city", type="string", categories=["lille", "lyon", "nice", "paris"]),
    Feature(name="age", type="float", minimum=18, maximum=80),
    Feature(name="income", type="float"),
]


def mixed_pipeline(final) -> Pipeline:  # noqa: ANN001
    pre = ColumnTransformer(
        [("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
         ("num", StandardScaler(), ["age", "income"])]
    )  # fmt: skip
    return Pipeline([("pre", pre), ("model", final)])


@pytest.fixture(scope="module")
def mixed_store_template(demo_store_template, tmp_path_factory) -> Path:
    """The demo store plus three mixed-type Pipelines, trained and published once."""
    store_dir = tmp_path_factory.mktemp("mixed") / "models"
    shutil.copytree(demo_store_template, store_dir)
    store = ModelStore(store_dir)
    frame, y = mixed_frame()
    for name, final in (
        ("mixed-lr", LogisticRegression(max_iter=1000)),
        ("mixed-rf", RandomForestClassifier(n_estimators=30, random_state=0)),
        ("mixed-knn", KNeighborsClassifier()),
    ):
        publish_estimator(
            store,
            mixed_pipeline(final).fit(frame, y),
            name=name,
            features=MIXED_FEATURES,
            sample_input=frame.head(40).values.tolist(),
            held_out=frame.tail(50),
            promote=True,
        )
    return store_dir


@pytest.fixture
def mixed_client(mixed_store_template, tmp_path):
    store_dir = tmp_path / "models"
    shutil.copytree(mixed_store_template, store_dir)  # serving records last-known-good in it
    app = create_app(Settings(MODEL_STORE=store_dir, MAX_ROWS=50))
    with app.test_client() as c:
        yield c


MIXED_ROWS = [["paris", 61.0, 35.5], ["lille", 25.0, 52.0], ["nice", 47.0, 40.0]]


@pytest.mark.parametrize(
    ("name", "kind", "method"),
    [
        ("mixed-lr", "probability", "exact_shapley"),
        ("mixed-lr", "log_odds", "linear"),
        ("mixed-rf", "probability", "tree_shap"),
    ],
)
def test_pipeline_one_hot_columns_are_summed_back_to_their_feature(
    mixed_client, name, kind, method
):
    body, predicted = explain_and_predict(mixed_client, name, MIXED_ROWS, output_kind=kind)
    assert body["features"] == ["city", "age", "income"]
    for i, row in enumerate(body["explanations"]):
        assert_additive(row, 3)  # one number per manifest feature, not per one-hot column
        assert row["output_kind"] == kind and row["method"] == method
        assert row["prediction"] == predicted["predictions"][i]
        p = predicted["probabilities"][i][row["prediction"]]
        assert abs(row["probability"] - p) <= TOL
        if kind == "log_odds":  # binary: log(p / (1 - p)) of the predicted class
            assert abs(row["output"] - np.log(p / (1 - p))) <= 1e-6
        else:
            assert abs(row["output"] - p) <= TOL


def test_linear_contributions_are_coef_times_distance_from_the_background(mixed_client):
    """Two rows differing only in age: only age's contribution differs."""
    rows = [["paris", 30.0, 40.0], ["paris", 70.0, 40.0]]
    body = mixed_client.post(
        "/v1/models/mixed-lr:explain", json={"instances": rows, "output_kind": "log_odds"}
    ).get_json()
    a, b = body["explanations"]
    if a["prediction"] == b["prediction"]:
        assert abs(a["contributions"][0] - b["contributions"][0]) <= TOL
        assert abs(a["contributions"][2] - b["contributions"][2]) <= TOL
        assert abs(a["contributions"][1] - b["contributions"][1]) > 0.1


def _estimator_of(app, name: str):  # noqa: ANN001, ANN202
    from service.explain.plane import explanations

    return explanations(app).explainer(app.extensions["predictor"].registry.get(name)).estimator


def test_probability_contributions_are_the_shapley_values_over_every_ordering(client, app):
    """iris in probability space, checked against the textbook definition: the average over
    all 4! orderings of each feature's marginal gain, the absent features taken from each
    background row (the manifest's sample rows) in turn."""
    from itertools import permutations

    body, _ = explain_and_predict(client, "iris", IRIS_ROWS)
    estimator = _estimator_of(app, "iris")
    model = app.extensions["predictor"].registry.get("iris")
    background = np.array(model.manifest.sample_input, dtype=float)
    classes = list(estimator.classes_)
    for x, row in zip(np.array(IRIS_ROWS, dtype=float), body["explanations"], strict=True):
        k = classes.index(estimator.predict(x[None])[0])

        def value(present: set[int], x=x, k=k) -> float:  # noqa: ANN001
            mixed = background.copy()
            mixed[:, sorted(present)] = x[sorted(present)]
            return float(estimator.predict_proba(mixed)[:, k].mean())

        phi = np.zeros(4)
        orders = list(permutations(range(4)))
        for order in orders:
            present: set[int] = set()
            for j in order:
                before = value(present)
                present.add(j)
                phi[j] += value(present) - before
        np.testing.assert_allclose(row["contributions"], phi / len(orders), atol=1e-9)
        assert abs(row["base_value"] - value(set())) <= 1e-9


@pytest.mark.parametrize(
    ("name", "body", "wanted"),
    [
        ("iris", {"output_kind": "logit"}, "output_kind must be one of"),
        ("iris", {"output_kind": 3}, "output_kind must be one of"),
        ("iris-rf", {"output_kind": "log_odds"}, "available: ['probability']"),
        ("diabetes", {"output_kind": "probability"}, "available: ['value']"),
    ],
)
def test_an_output_kind_the_model_does_not_offer_is_a_400_naming_the_choices(
    client, name, body, wanted
):
    rows = DIABETES_ROWS if name == "diabetes" else IRIS_ROWS
    response = client.post(f"/v1/models/{name}:explain", json={"instances": rows, **body})
    assert wanted in assert_json_error(response, 400, "invalid_output_kind")["error"]["message"]


def test_probability_space_past_its_budget_is_a_413_saying_how_many_rows_fit(client, monkeypatch):
    import service.explain as explain_package

    # iris: 16 coalitions x its background rows per explained row; a budget of two rows.
    background = len(client.get("/v1/models/iris").get_json()["sample_input"])
    monkeypatch.setattr(explain_package, "MAX_EVALUATIONS", 2 * 16 * background)
    response = client.post("/v1/models/iris:explain", json={"instances": IRIS_ROWS * 3})
    message = assert_json_error(response, 413, "too_many_rows")["error"]["message"]
    assert "at most 2 rows" in message and "log_odds" in message
    ok = client.post("/v1/models/iris:explain", json={"instances": IRIS_ROWS[:2]})
    assert ok.status_code == 200


def test_unsupported_family_answers_501_naming_why(mixed_client):
    response = mixed_client.post("/v1/models/mixed-knn:explain", json={"instances": MIXED_ROWS})
    error = assert_json_error(response, 501, "explain_unsupported")["error"]
    assert "KNeighborsClassifier" in error["message"] and "exact" in error["message"]
    # The refusal is cached per version and repeats, and predictions are unaffected.
    assert mixed_client.post("/v1/models/mixed-knn:explain", json={"instances": MIXED_ROWS}
                             ).status_code == 501  # fmt: skip
    assert mixed_client.post("/v1/models/mixed-knn:predict", json={"instances": MIXED_ROWS}
                             ).status_code == 200  # fmt: skip


def test_svc_answers_501(store_dir):
    from sklearn.datasets import load_iris

    iris = load_iris()
    store = ModelStore(store_dir)
    publish_estimator(
        store, SVC().fit(iris.data, iris.target), name="iris-svc",
        features=[Feature(name=n) for n in iris.feature_names],
        sample_input=iris.data[:5].tolist(), held_out=iris.data[:20], promote=True,
    )  # fmt: skip
    client = create_app(Settings(MODEL_STORE=store_dir)).test_client()
    response = client.post("/v1/models/iris-svc:explain", json={"instances": IRIS_ROWS})
    assert "SVC" in assert_json_error(response, 501, "explain_unsupported")["error"]["message"]


# --- bad input, access, trust ------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/models/iris:explain", {"instances": [[1.0, 2.0]]}, 400, "wrong_feature_count"),
        ("/v1/models/iris:explain", {"rows": []}, 400, "missing_field"),
        ("/v1/models/iris:explain", {"instances": []}, 400, "empty_batch"),
        ("/v1/models/iris:explain", {"instances": [["a", 1, 2, 3]]}, 400, "invalid_type"),
        ("/v1/models/nope:explain", {"instances": [[1, 2, 3, 4]]}, 404, "model_not_found"),
        ("/v1/models/iris/versions/9:explain", {"instances": IRIS_ROWS}, 404, None),
    ],
)
def test_bad_requests_say_what_was_wrong(client, path, body, status, code):
    error = assert_json_error(client.post(path, json=body), status, code)["error"]
    assert error["message"] if isinstance(error, dict) else error


def test_unseen_category_is_the_clients_input_not_a_500(mixed_client):
    # handle_unknown="ignore": explained as all-zero one-hot, still additive.
    body, _ = explain_and_predict(mixed_client, "mixed-lr", [["tokyo", 40.0, 40.0]])
    assert_additive(body["explanations"][0], 3)


def test_explain_needs_the_api_key_like_predict(store_dir):
    key = "s3cret-key"
    app = create_app(Settings(MODEL_STORE=store_dir, API_KEYS=f"alice:{hash_key(key)}"))
    client = app.test_client()
    url = "/v1/models/iris:explain"
    assert_json_error(client.post(url, json={"instances": IRIS_ROWS}), 401, "unauthorized")
    ok = client.post(url, json={"instances": IRIS_ROWS}, headers={"X-API-Key": key})
    assert ok.status_code == 200 and ok.headers["X-API-Key-Id"] == "alice"


def test_compiled_model_loads_its_estimator_through_the_verifying_loader(store_dir):
    """iris-rf serves its compiled graph; explain loads the skops estimator, verified first."""
    app = create_app(Settings(MODEL_STORE=store_dir))
    client = app.test_client()
    model = app.extensions["predictor"].registry.get("iris-rf")
    assert model.runtime.name != "sklearn"  # the hot path never deserialised the estimator
    store = ModelStore(store_dir)
    artifact = store.version_dir("iris-rf", "1") / model.manifest.artifact
    artifact.write_bytes(artifact.read_bytes() + b"tampered")  # after load: digest now wrong
    response = client.post("/v1/models/iris-rf:explain", json={"instances": IRIS_ROWS})
    assert "digest" in assert_json_error(response, 503, "estimator_refused")["error"]["message"]
    assert client.post("/v1/models/iris-rf:predict", json={"instances": IRIS_ROWS}
                       ).status_code == 200  # fmt: skip


def test_explain_requests_are_counted_by_model_method_and_status(client):
    counter = metrics.EXPLAIN_REQUESTS.labels("diabetes", "tree_shap", "ok")
    before = counter._value.get()
    client.post("/v1/models/diabetes:explain", json={"instances": DIABETES_ROWS})
    assert counter._value.get() == before + 1
    text = client.get("/metrics").get_data(as_text=True)
    assert 'predictor_explain_duration_seconds_count{method="tree_shap"}' in text
