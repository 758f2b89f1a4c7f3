"""The V2 model repository extension: index, load, unload, behind the admin token.

``Authorization: Bearer <PREDICTOR_ADMIN_TOKEN>`` (or ``X-API-Key``), compared in
constant time (service/auth.py). No credentials: 401; a wrong token: 403; no token
configured: 403 on every call, so the routes are off unless an operator turns them
on. Errors use the V2 shape ``{"error": "..."}`` like every ``/v2`` route. A
load/unload reaches every gunicorn worker (service/repository_sync.py).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from .. import auth
from ..errors import bad_input
from ..http import json_response, read_optional_object
from ..state import plane
from . import schemas
from .openapi import operation

bp = Blueprint("repository", __name__)
OPTIONS = {
    "body": schemas.RepositoryOptions,
    "body_required": False,
    "errors": {400: "Bad body.", 413: "Too large a body."},
}


@bp.post("/v2/repository/index")
@auth.admin
@operation("Repository index", "repository", ok=schemas.RepositoryIndex, **OPTIONS)
def index() -> Response:
    dp = plane()
    only_ready = read_optional_object(dp.settings.MAX_BODY_BYTES).get("ready") is True
    models = [
        {"name": s.name, "version": s.version or "", "state": s.state, "reason": s.reason}
        for s in dp.repository_index(ready_only=only_ready)
    ]
    return json_response(models)


@bp.post("/v2/repository/models/<name>/load")
@auth.admin
@operation(
    "Load a model",
    "repository",
    ok=schemas.RepositoryAction,
    errors={
        400: "Bad body, or load parameters other than a version.",
        409: "The model has no current version.",
        422: "The current version was refused.",
    },
    body=schemas.RepositoryOptions,
    body_required=False,
)
def load(name: str) -> Response:
    dp = plane()
    version = _version_parameter(read_optional_object(dp.settings.MAX_BODY_BYTES))
    model = dp.load_model(name, version)
    return json_response({"name": model.name, "version": model.version, "state": "READY"})


@bp.post("/v2/repository/models/<name>/unload")
@auth.admin
@operation("Unload a model", "repository", ok=schemas.RepositoryAction, **OPTIONS)
def unload(name: str) -> Response:
    dp = plane()
    body = read_optional_object(dp.settings.MAX_BODY_BYTES)
    # tritonclient always sends unload_dependents; there are no dependents to unload here.
    parameters = body.get("parameters")
    if isinstance(parameters, dict):
        parameters.pop("unload_dependents", None)
    version = _version_parameter(body)
    dp.unload_model(name, version)
    if version is not None:
        return json_response({"name": name, "version": version, "state": "UNAVAILABLE"})
    return json_response({"name": name, "state": "UNAVAILABLE"})


def _version_parameter(payload: dict[str, Any]) -> str | None:
    """``{"parameters": {"version": "3"}}`` makes a version servable besides the current one
    (the version policy); no other load parameter is supported: models load from the store."""
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
