"""The OpenAPI document: a valid OpenAPI 3.1 document that names every route the app has."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from service.app import create_app
from service.settings import Settings


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # No models needed to list routes and serve the document.
    return create_app(Settings(MODEL_STORE=tmp_path_factory.mktemp("empty")), load_models=False)


@pytest.fixture(scope="module")
def document(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def _app_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    return routes


def test_document_is_valid_openapi(document):
    validate(document)  # raises with the exact place of any mistake
    assert document["openapi"].startswith("3.")


def test_every_route_is_documented(app, document):
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    missing = _app_routes(app) - documented
    assert not missing, f"routes missing from /openapi.json: {sorted(missing)}"
    stale = documented - _app_routes(app)
    assert not stale, f"documented but not served: {sorted(stale)}"


def test_every_operation_has_schemas(document):
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert "200" in op["responses"], (path, method)
            for status, response in op["responses"].items():
                content = response.get("content")
                assert content, f"{method.upper()} {path} {status} has no response schema"
                assert all("schema" in media for media in content.values()), (path, status)
            if method == "post":
                assert "requestBody" in op, f"POST {path} documents no request body"


def test_the_expected_protocols_are_there(app):
    routes = _app_routes(app)
    for needed in [
        ("/predict", "post"),
        ("/v1/models/{name}:predict", "post"),
        ("/v2/models/{name}/versions/{version}/infer", "post"),
        ("/v2/repository/models/{name}/unload", "post"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/", "get"),
    ]:
        assert needed in routes, needed
