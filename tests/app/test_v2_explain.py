"""The V2 ``explanation`` output, as a V2 client asks for it: REST (JSON and binary).
gRPC is tests/stack/test_grpc_tritonclient.py (against the real gunicorn: our generated
proto and tritonclient's cannot share one process's descriptor pool, and pytest's
collection imports tritonclient).

Every row adds up (``base_value + sum(contributions) == output`` within 1e-6) and
``output`` is what the same response's ``predict_proba`` (or ``predict``) reports
for that row; bad requests are 400s naming the problem, unsupported families 501.
"""

from __future__ import annotations

import json

import pytest
from sklearn.datasets import load_iris
from sklearn.neighbors import KNeighborsClassifier

from service.manifest import Feature
from service.protocols.v2_tensors import deserialize_bytes
from service.publish import publish_estimator
from service.settings import Settings
from service.store import ModelStore
from tests.helpers import IRIS_ROWS

TOL = 1e-6
DIABETES_ROWS = [
    [0.038, 0.05, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017],
    [-0.001, -0.044, -0.051, -0.026, -0.008, -0.019, 0.074, -0.039, -0.068, -0.092],
]


def infer_body(rows: list, outputs: list[dict], **extra) -> dict:
    return {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP64",
                "data": [v for row in rows for v in row],
            }
        ],
        "outputs": outputs,
        **extra,
    }


def outputs_of(response) -> dict:  # noqa: ANN001
    assert response.status_code == 200, response.get_data(as_text=True)
    return {o["name"]: o for o in response.get_json()["outputs"]}


def check_rows(elements: list, predict: list, proba: list | None, n_features: int) -> list:
    """Additivity and agreement with the same response's predict / predict_proba."""
    rows = [json.loads(e) for e in elements]
    for i, row in enumerate(rows):
        assert len(row["contributions"]) == len(row["features"]) == n_features
        assert abs(row["base_value"] + sum(row["contributions"]) - row["output"]) <= TOL
        assert row["prediction"] == predict[i]
        if proba is None:
            assert row["output_kind"] == "value"
            assert abs(row["output"] - predict[i]) <= TOL
        else:
            per_row = len(proba) // len(predict)
            p = max(proba[i * per_row : (i + 1) * per_row])  # the predicted class's
            assert abs(row["probability"] - p) <= TOL
            if row["output_kind"] == "probability":
                assert abs(row["output"] - p) <= TOL
    return rows


@pytest.mark.parametrize(
    ("name", "rows", "method"),
    [
        ("iris", IRIS_ROWS, "exact_shapley"),
        ("iris-rf", IRIS_ROWS, "tree_shap"),
        ("diabetes", DIABETES_ROWS, "tree_shap"),
    ],
)
def test_explanation_output_adds_up_and_agrees_with_predict(client, name, rows, method):
    classifier = name != "diabetes"
    wanted = [{"name": "predict"}, {"name": "explanation"}]
    if classifier:
        wanted.insert(1, {"name": "predict_proba"})
    out = outputs_of(client.post(f"/v2/models/{name}/infer", json=infer_body(rows, wanted)))
    explanation = out["explanation"]
    assert explanation["datatype"] == "BYTES" and explanation["shape"] == [len(rows)]
    proba = out["predict_proba"]["data"] if classifier else None
    answered = check_rows(explanation["data"], out["predict"]["data"], proba, len(rows[0]))
    assert {r["method"] for r in answered} == {method}
    assert {r["output_kind"] for r in answered} == {"probability" if classifier else "value"}
    # The same numbers :explain answers for the same rows.
    v1 = client.post(f"/v1/models/{name}:explain", json={"instances": rows}).get_json()
    for mine, theirs in zip(answered, v1["explanations"], strict=True):
        assert mine["contributions"] == theirs["contributions"]
        assert mine["features"] == v1["features"]


def test_pinned_version_log_odds_and_explanation_alone(client):
    body = infer_body(
        IRIS_ROWS, [{"name": "explanation", "parameters": {"output_kind": "log_odds"}}]
    )
    out = outputs_of(client.post("/v2/models/iris/versions/1/infer", json=body))
    assert list(out) == ["explanation"]
    for row in map(json.loads, out["explanation"]["data"]):
        assert row["output_kind"] == "log_odds" and row["method"] == "linear"
        assert abs(row["base_value"] + sum(row["contributions"]) - row["output"]) <= TOL


def test_binary_explanation_output_decodes_as_bytes_elements(client):
    body = infer_body(IRIS_ROWS, [{"name": "predict"}, {"name": "explanation"}])
    body["parameters"] = {"binary_data_output": True}
    response = client.post("/v2/models/iris-rf/infer", json=body)
    assert response.status_code == 200
    raw = response.get_data()
    split = int(response.headers["Inference-Header-Content-Length"])
    header, blobs = json.loads(raw[:split]), memoryview(raw)[split:]
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert [o["name"] for o in header["outputs"]] == ["predict", "explanation"]
    predict = deserialize_bytes("predict", blobs[: sizes[0]])
    elements = deserialize_bytes("explanation", blobs[sizes[0] : sizes[0] + sizes[1]])
    rows = [json.loads(e) for e in elements]
    assert [r["prediction"] for r in rows] == predict
    assert all(abs(r["base_value"] + sum(r["contributions"]) - r["output"]) <= TOL for r in rows)


@pytest.mark.parametrize(
    ("name", "outputs", "wanted"),
    [
        ("iris", [{"name": "explain"}], "available: ['predict', 'predict_proba', 'explanation']"),
        (
            "iris",
            [{"name": "explanation", "parameters": {"output_kind": "logit"}}],
            "output_kind must be one of ['probability', 'log_odds', 'value'], got 'logit'",
        ),
        (
            "iris-rf",
            [{"name": "explanation", "parameters": {"output_kind": "log_odds"}}],
            "available: ['probability']",
        ),
        (
            "iris",
            [{"name": "explanation", "parameters": {"method": "kernel"}}],
            "unknown parameter ['method']",
        ),
        ("iris", [{"name": "explanation", "parameters": "log_odds"}], "must be a JSON object"),
    ],
)
def test_bad_explanation_requests_are_400s_naming_the_problem(client, name, outputs, wanted):
    response = client.post(f"/v2/models/{name}/infer", json=infer_body(IRIS_ROWS, outputs))
    assert response.status_code == 400
    assert wanted in response.get_json()["error"]


def test_bad_rows_answer_as_predict_does(client):
    body = infer_body([[1.0, 2.0]], [{"name": "explanation"}])
    response = client.post("/v2/models/iris/infer", json=body)
    assert response.status_code == 400 and "expected" in response.get_json()["error"]


@pytest.fixture
def knn_app(store_dir):
    from service.app import create_app

    iris = load_iris()
    publish_estimator(
        ModelStore(store_dir),
        KNeighborsClassifier().fit(iris.data, iris.target),
        name="iris-knn",
        features=[Feature(name=n.replace(" ", "_")) for n in iris.feature_names],
        sample_input=iris.data[:3].tolist(),
        held_out=iris.data[::10],
        promote=True,
    )
    return create_app(Settings(MODEL_STORE=store_dir))


def test_unsupported_family_is_a_501_with_the_reason_and_predict_still_serves(knn_app):
    client = knn_app.test_client()
    body = infer_body(IRIS_ROWS, [{"name": "predict"}, {"name": "explanation"}])
    response = client.post("/v2/models/iris-knn/infer", json=body)
    assert response.status_code == 501
    assert "KNeighborsClassifier" in response.get_json()["error"]
    ok = client.post("/v2/models/iris-knn/infer", json=infer_body(IRIS_ROWS, [{"name": "predict"}]))
    assert ok.status_code == 200


def test_openapi_documents_the_explanation_output(client):
    spec = client.get("/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    assert "explanation" in schemas["RequestedOutput"]["properties"]["name"]["enum"]
    assert "output_kind" in schemas["OutputParameters"]["properties"]
    assert {"contributions", "base_value", "features"} <= set(
        schemas["V2Explanation"]["properties"]
    )
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert "501" in infer["responses"] and "explanation" in infer["description"]
