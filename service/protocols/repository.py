"""The V2 model repository extension: index, load, unload, behind the admin token.

``Authorization: Bearer <PREDICTOR_ADMIN_TOKEN>``, compared in constant time.
No header: 401; a wrong token: 403; no token configured: 403 on every call, so
the routes are off unless an operator turns them on. Errors use the V2 shape
``{"error": "..."}``.
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, request

from ..errors import PredictorError, bad_input
from ..http import json_response
from ..state import state
from .repository_sync import RepositorySync, shared_state_path
from .v2_tensors import v2_error

bp = Blueprint("repository", __name__)

TOKEN_VARIABLE = "PREDICTOR_ADMIN_TOKEN"
SYNC = "repository_sync"


@bp.record_once
def _install_sync(setup: Any) -> None:
    """With the API on, every worker applies the others' load/unload before each request."""
    app = setup.app
    st = state(app)
    if not st.settings.admin_token:
        return
    sync = st.extra[SYNC] = RepositorySync(shared_state_path())
    if sync.path is not None:
        app.before_request(lambda: sync.apply(st.registry))


@bp.errorhandler(PredictorError)
def _error(exc: PredictorError) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="predictor"'} if exc.status == 401 else None
    return json_response(v2_error(exc), exc.status, headers=headers)


@bp.before_request
def _authorize() -> None:
    token = state(current_app).settings.admin_token
    if not token:
        raise PredictorError(
            403,
            "repository_disabled",
            f"the model repository API is disabled: set {TOKEN_VARIABLE} on the service "
            "to enable it",
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise PredictorError(
            401, "unauthorized", "missing credentials: send Authorization: Bearer <admin token>"
        )
    if not hmac.compare_digest(given.strip().encode(), token):
        raise PredictorError(403, "forbidden", "the admin token is not valid")


def _optional_json() -> dict[str, Any]:
    """Repository bodies are optional JSON objects (clients send none or ``{}``)."""
    data = request.get_data(cache=False)
    if not data.strip():
        return {}
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise bad_input("invalid_json", f"request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise bad_input("invalid_request", "the request body must be a JSON object")
    return payload


@bp.post("/v2/repository/index")
def index() -> Response:
    only_ready = _optional_json().get("ready") is True
    models = [
        {"name": s.name, "version": s.version or "", "state": s.state, "reason": s.reason}
        for s in state(current_app).registry.status()
        if not only_ready or s.state == "READY"
    ]
    return json_response(models)


def _version_parameter(payload: dict[str, Any]) -> str | None:
    """``{"parameters": {"version": "3"}}`` names a version besides the current one."""
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict) or set(parameters) - {"version"}:
        raise bad_input(
            "unsupported_parameter",
            "the only load parameter is version (a version of the store to keep loaded); "
            "config and files are not supported: models load from the store",
        )
    version = parameters.get("version")
    if version is not None and not isinstance(version, str):
        raise bad_input("invalid_type", "parameters.version must be a string")
    return version


@bp.post("/v2/repository/models/<name>/load")
def load(name: str) -> Response:
    version = _version_parameter(_optional_json())
    st = state(current_app)
    if version is not None:
        model = st.registry.pin(name, version)
        st.extra[SYNC].record_pin(name, version, pinned=True)
    else:
        model = st.registry.load(name)
        st.extra[SYNC].record(name, unloaded=False)
    return json_response({"name": model.name, "version": model.version, "state": "READY"})


@bp.post("/v2/repository/models/<name>/unload")
def unload(name: str) -> Response:
    version = _version_parameter(_optional_json())
    st = state(current_app)
    if version is not None:
        st.registry.unpin(name, version)
        st.extra[SYNC].record_pin(name, version, pinned=False)
        return json_response({"name": name, "version": version, "state": "UNAVAILABLE"})
    st.registry.unload(name)
    st.extra[SYNC].record(name, unloaded=True)
    return json_response({"name": name, "state": "UNAVAILABLE"})
