"""schemathesis against /openapi.json of the real gunicorn: no 5xx, responses conform.

Bounded: at most MAX_EXAMPLES generated requests per operation (~25 operations),
all to 127.0.0.1; the whole module takes well under a minute here.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.protocols.openapi import build_document
from service.settings import Settings
from tests.v2_server import ADMIN_TOKEN, shared_server

MAX_EXAMPLES = 15
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(demo_store):
    server = shared_server(demo_store)
    yield server
    # Generated requests may have unloaded a demo model: put every one back.
    for name in ("iris", "iris-rf", "diabetes"):
        response = requests.post(
            f"{server.url}/v2/repository/models/{name}/load", headers=ADMIN, timeout=30
        )
        assert response.status_code == 200, response.text


# The document the app generates (test_openapi_spec.py checks it is served as built); built
# eagerly so that each operation is its own test item. Routes need no models to be listed.
schema = schemathesis.openapi.from_dict(
    # Only the routes matter here: no store, no key (collection runs before any fixture).
    build_document(
        create_app(Settings(MODEL_STORE="/nonexistent", ALLOW_UNSIGNED=True), load_models=False)
    )
)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests every run: a failure reproduces
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms(case, server):
    # The admin token lets generated requests reach the repository routes' real work.
    response = case.call_and_validate(base_url=server.url, headers=ADMIN, checks=CHECKS)
    if case.path.endswith("/unload") and response.status_code == 200:
        # An unloaded demo model would make later operations answer a (documented) 503.
        name = case.path_parameters["name"]
        requests.post(f"{server.url}/v2/repository/models/{name}/load", headers=ADMIN, timeout=30)
