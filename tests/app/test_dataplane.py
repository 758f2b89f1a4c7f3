"""The data plane without any transport: one readiness rule, and every route agrees."""

from __future__ import annotations

from service.app import create_app
from service.settings import Settings
from service.state import state

from ..conftest import IRIS_ROW

READINESS = [
    "/readyz",
    "/v2/health/ready",
    "/v2/models/iris/ready",
    "/v2/models/iris/versions/1/ready",
]


def test_readiness_is_one_rule(settings):
    app = create_app(settings)
    plane = state(app)
    assert plane.ready().ready and plane.model_ready("iris").ready
    with app.test_client() as client:
        assert [client.get(p).status_code for p in READINESS] == [200] * 4
        plane.begin_drain()
        assert plane.ready().status == "draining"
        assert not plane.model_ready("iris").ready
        assert [client.get(p).status_code for p in READINESS] == [503] * 4
        assert client.post("/predict", json={"input": IRIS_ROW}).status_code == 200


def test_an_unloaded_model_makes_every_route_not_ready(settings):
    app = create_app(settings)
    plane = state(app)
    plane.unload_model("iris")
    assert not plane.model_ready("iris").ready
    with app.test_client() as client:
        # An unloaded model is the operator's choice: the server stays ready.
        assert client.get("/readyz").status_code == client.get("/v2/health/ready").status_code
        assert client.get("/v2/models/iris/ready").status_code == 503


def test_a_model_refused_at_start_is_listed_and_routes_agree(store_dir):
    (store_dir / "iris" / "1" / "manifest.json").write_text("{not json")
    app = create_app(Settings(MODEL_STORE=store_dir))
    readiness = state(app).ready()
    # Others serve: a broken model is listed, never blocks the server (one rule for all).
    assert readiness.ready and [m["name"] for m in readiness.unavailable] == ["iris"]
    with app.test_client() as client:
        readyz = client.get("/readyz")
        assert readyz.status_code == client.get("/v2/health/ready").status_code == 200
        assert readyz.get_json()["unavailable"][0]["name"] == "iris"
        assert client.get("/v2/models/iris/ready").status_code == 503
        assert client.get("/v2/models/diabetes/ready").status_code == 200


def test_statistics_count_requests_and_rows(settings):
    plane = state(create_app(settings))
    (before,) = plane.statistics("diabetes", "1")
    model = plane.model("diabetes")
    import numpy as np

    plane.predict(model, np.zeros((3, 10)))
    (after,) = plane.statistics("diabetes", "1")
    assert after.success.count == before.success.count + 1
    assert after.inference_count == before.inference_count + 3
    assert after.last_inference > 0
