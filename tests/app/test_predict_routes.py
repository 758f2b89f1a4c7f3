"""The seed route and KServe V1, as a user calls them (Flask test client)."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.helpers import IRIS_ROW


def test_seed_route_answers_the_iris_prediction(client):
    response = client.post("/predict", json={"input": IRIS_ROW})
    assert response.status_code == 200
    body = response.get_json()
    assert body == {"prediction": ["setosa"], "model": "iris", "version": "1"}
    assert response.headers["X-Model-Version"] == "1"


def test_seed_route_takes_many_rows_and_probabilities(client):
    rows = [IRIS_ROW, [6.7, 3.0, 5.2, 2.3]]
    body = client.post("/predict", json={"input": rows, "probabilities": True}).get_json()
    assert body["prediction"] == ["setosa", "virginica"]
    first = body["probabilities"][0]
    assert set(first) == {"setosa", "versicolor", "virginica"}
    assert abs(sum(first.values()) - 1) < 1e-9 and first["setosa"] > 0.9


def test_v1_ordered_and_named_instances(client):
    named = {
        "sepal length (cm)": 6.7,
        "sepal width (cm)": 3.0,
        "petal length (cm)": 5.2,
        "petal width (cm)": 2.3,
    }
    response = client.post("/v1/models/iris:predict", json={"instances": [IRIS_ROW, named]})
    assert response.status_code == 200
    assert response.get_json()["predictions"] == ["setosa", "virginica"]


def test_v1_pinned_version_and_regressor(client):
    response = client.post("/v1/models/iris/versions/1:predict", json={"instances": [IRIS_ROW]})
    assert response.get_json()["version"] == "1"
    row = [0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.002, 0.02, -0.02]
    body = client.post("/v1/models/diabetes:predict", json={"instances": [row]}).get_json()
    assert isinstance(body["predictions"][0], float) and 25 < body["predictions"][0] < 350


def test_v1_model_metadata(client):
    listing = client.get("/v1/models").get_json()["models"]
    assert [m["name"] for m in listing] == ["diabetes", "iris", "iris-rf"]
    iris = client.get("/v1/models/iris").get_json()
    assert iris["current_version"] == "1" and iris["ready"] is True
    assert [f["name"] for f in iris["features"]][0] == "sepal length (cm)"
    assert iris["output_labels"] == ["setosa", "versicolor", "virginica"]
    assert iris["versions"][0]["metrics"]["accuracy"] > 0.9
    assert client.get("/v1/models/nope").status_code == 404


def test_health_and_readiness(client, tmp_path):
    assert client.get("/healthz").get_json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"

    from service.app import create_app

    empty = create_app(Settings(MODEL_STORE=tmp_path / "empty")).test_client()
    response = empty.get("/readyz")
    assert response.status_code == 503 and response.get_json()["status"] == "not ready"
    assert empty.post("/predict", json={"input": IRIS_ROW}).status_code == 404


@pytest.mark.parametrize("path", ["/predict", "/v1/models/iris:predict"])
def test_request_id_round_trips(client, path):
    body = {"input": IRIS_ROW} if path == "/predict" else {"instances": [IRIS_ROW]}
    response = client.post(path, json=body, headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    generated = client.post(path, json=body).headers["X-Request-ID"]
    assert len(generated) == 32


def test_cheap_model_batches_skip_the_cache_single_rows_keep_it(client):
    """Default settings, in-process cache: keying 40 rows costs more than a compiled
    graph predicting them, so the batch bypasses the cache; a repeated single row hits."""
    rows = [[5.0 + i / 100, 3.0, 1.5, 0.2] for i in range(40)]
    batch = client.post("/v1/models/iris:predict", json={"instances": rows})
    assert batch.status_code == 200 and batch.headers["X-Cache"] == "bypass"
    assert client.post("/predict", json={"input": IRIS_ROW}).headers["X-Cache"] == "miss"
    assert client.post("/predict", json={"input": IRIS_ROW}).headers["X-Cache"] == "hit"
    # A slow model (the forest in scikit-learn) caches its batches.
    from service.app import create_app
    from service.settings import Settings

    slow = create_app(
        Settings(MODEL_STORE=client.application.extensions["predictor"].settings.MODEL_STORE,
                 RUNTIME="sklearn")
    ).test_client()  # fmt: skip
    first = slow.post("/v1/models/iris-rf:predict", json={"instances": rows})
    again = slow.post("/v1/models/iris-rf:predict", json={"instances": rows})
    assert (first.headers["X-Cache"], again.headers["X-Cache"]) == ("miss", "hit")
