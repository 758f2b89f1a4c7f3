"""Errors shaped at the edge, per protocol: every /v2 error body is {"error": "<message>"}
(unknown routes, wrong methods, bad JSON, auth...), while V1 and the seed route keep
{"error": {"code", "message"}}."""

from __future__ import annotations

import pytest

from service.app import create_app
from service.auth import hash_key
from service.settings import Settings

from ..conftest import IRIS_ROW

KEY = "k-shape-0123456789"


@pytest.fixture(scope="module")
def client(demo_store):
    settings = Settings(MODEL_STORE=demo_store, API_KEYS=f"k:{hash_key(KEY)}", MAX_BODY_BYTES=2048)
    with create_app(settings).test_client() as c:
        yield c


AUTH = {"X-API-Key": KEY}
V2_ERRORS = [
    ("GET", "/v2/nothing-here", None, {}, 404, "no route for GET /v2/nothing-here"),
    ("GET", "/v2/models/iris/versions/1/what", None, {}, 404, "no route"),
    ("POST", "/v2", None, {}, 405, "POST is not allowed on /v2; use GET, HEAD, OPTIONS"),
    ("DELETE", "/v2/models/iris", None, {}, 405, "use GET, HEAD, OPTIONS"),
    ("GET", "/v2/models/iris/infer", None, {}, 405, "use OPTIONS, POST"),
    ("GET", "/v2/repository/index", None, {}, 405, "use OPTIONS, POST"),
    ("POST", "/v2/models/iris/infer", b'{"inputs": [', AUTH, 400, "not valid JSON"),
    ("POST", "/v2/models/iris/infer", b"{}", {}, 401, "an API key is required"),
    ("POST", "/v2/models/iris/infer", b"x" * 4096, AUTH, 413, "exceeds the limit"),
    ("POST", "/v2/repository/index", None, {}, 403, "PREDICTOR_ADMIN_TOKEN"),
    ("GET", "/v2/models/nope", None, {}, 404, "'nope' not found"),
    ("GET", "/v2/models/nope/config", None, {}, 404, "'nope' not found"),
    ("GET", "/v2/models/nope/stats", None, {}, 404, "'nope' not found"),
    ("GET", "/v2/models/iris/versions/9/stats", None, AUTH, 404, "no version '9'"),
    # Version-pinned routes need the key whenever keys are configured (the version policy).
    ("GET", "/v2/models/iris/versions/1/stats", None, {}, 401, "API key is required"),
]


@pytest.mark.parametrize(
    ("method", "url", "body", "headers", "status", "words"),
    V2_ERRORS,
    ids=[f"{c[0]} {c[1]} {c[4]}" for c in V2_ERRORS],
)
def test_every_v2_error_is_a_string(client, method, url, body, headers, status, words):
    response = client.open(url, method=method, data=body, headers=headers)
    assert response.status_code == status, response.get_data(as_text=True)
    payload = response.get_json()
    assert set(payload) == {"error"} and isinstance(payload["error"], str), payload
    assert words in payload["error"]
    if status == 405:
        assert response.headers["Allow"] in payload["error"]
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


OTHER_ERRORS = [
    ("GET", "/v1/nothing", None, {}, 404, "not_found"),
    ("GET", "/predict", None, {}, 405, "method_not_allowed"),
    ("POST", "/predict", b"{", AUTH, 400, "invalid_json"),
    ("POST", "/predict", b"{}", {}, 401, "unauthorized"),
    ("POST", "/v1/models/nope:predict", b"{}", AUTH, 404, "model_not_found"),
    ("GET", "/v2x", None, {}, 404, "not_found"),  # not under /v2: the default shape
]


@pytest.mark.parametrize(
    ("method", "url", "body", "headers", "status", "code"),
    OTHER_ERRORS,
    ids=[f"{c[0]} {c[1]} {c[4]}" for c in OTHER_ERRORS],
)
def test_seed_and_v1_keep_code_and_message(client, method, url, body, headers, status, code):
    response = client.open(
        url, method=method, data=body, headers={"Content-Type": "application/json", **headers}
    )
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]


def test_wrong_method_lists_the_allowed_ones(client):
    response = client.get("/predict")
    assert response.headers["Allow"] == "OPTIONS, POST"
    assert client.post("/predict", json={"input": IRIS_ROW}, headers=AUTH).status_code == 200
