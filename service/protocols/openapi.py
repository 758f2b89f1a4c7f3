"""``GET /openapi.json``, generated: each view declares its operation next to its route
(``@operation``: summary, request model, response models, the errors it can answer),
its access class comes from ``@auth.*``, its path and methods from ``app.url_map``, and
every body schema from the pydantic models in protocols/schemas.py. A route added
without ``@operation`` is still listed (from its rule), so the document never misses one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from flask import Blueprint, Flask, Response, current_app
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import __version__, auth
from ..auth import Access, access_of
from ..http import JSON, shape_for, v2_error
from . import schemas

bp = Blueprint("openapi", __name__)

ATTRIBUTE = "predictor_operation"
View = TypeVar("View", bound=Callable[..., object])
Model = type[BaseModel]


@dataclass(frozen=True)
class Operation:
    """What a view's OpenAPI operation says beyond its path, methods and access."""

    summary: str
    tag: str
    ok: Model | Mapping[str, dict[str, Any]] | None = None  # a model, or media type -> schema
    body: Model | None = None
    body_required: bool = True
    errors: Mapping[int, str] = field(default_factory=dict)
    other: Mapping[int, tuple[Model, str]] = field(default_factory=dict)  # e.g. 503 bodies
    parameters: tuple[dict[str, Any], ...] = ()
    description: str = ""
    models: tuple[Model, ...] = ()  # further models the ``ok`` media types refer to


def operation(summary: str, tag: str, **details: Any) -> Callable[[View], View]:
    """Declare the OpenAPI operation of a view (see ``Operation``)."""

    def mark(view: View) -> View:
        setattr(view, ATTRIBUTE, Operation(summary, tag, **details))
        return view

    return mark


# Shared pieces the views name.
PROBABILITIES = {
    "name": "probabilities",
    "in": "query",
    "required": False,
    "description": "true, 1 or yes: also return class probabilities (classifiers); "
    "any other value: no probabilities.",
    "schema": {"type": "string", "examples": ["true"]},
}
INFER_HEADER = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "description": "Binary tensor data extension: the length of the JSON part of the body; "
    "raw tensor bytes follow it (Content-Type application/octet-stream).",
    "schema": {"type": "integer", "minimum": 1},
}
BODY_ERRORS = {
    400: "Bad input: the message says what was wrong and what is expected.",
    404: "Unknown model or version.",
    413: "Too many rows, or too large a body (after decompression too).",
    415: "Body is not JSON, or an unsupported Content-Encoding.",
    422: "The model itself refused the rows (e.g. an unseen category it cannot encode).",
    503: "The model is not loaded (refused or unloaded).",
}
PATH_EXAMPLES = {"name": "iris", "version": "1"}
PATH_DESCRIPTIONS = {"name": "Model name, e.g. iris.", "version": "Model version, e.g. 1."}
TEXT = {"schema": {"type": "string"}}
_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")  # werkzeug rule variables
TAGS = ("seed", "v1", "v2", "repository", "health", "meta", "web")


def _ref(model: Model) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _operation_for(
    path: str, method: str, endpoint: str, view: Callable[..., object], arguments: list[str]
) -> tuple[dict[str, Any], set[Model]]:
    op: Operation = getattr(view, ATTRIBUTE, None) or Operation(endpoint, "other")
    used: set[Model] = set(op.models)
    shape = shape_for(path)
    error_model = getattr(shape, "openapi_schema", None) or (
        schemas.V2Error if shape is v2_error else schemas.Error
    )
    used.add(error_model)
    responses: dict[str, Any] = {}
    if isinstance(op.ok, type):
        used.add(op.ok)
        responses["200"] = _json(_ref(op.ok), op.summary)
    elif op.ok:
        responses["200"] = {"description": op.summary, "content": dict(op.ok)}
    else:
        responses["200"] = {"description": op.summary, "content": {JSON: {"schema": {}}}}
    for status, (model, description) in op.other.items():
        used.add(model)
        responses[str(status)] = _json(_ref(model), description)
    errors = dict(op.errors)
    if arguments:
        errors.setdefault(404, "Unknown model or version.")
    level = access_of(view)
    security: list[dict[str, list[str]]] | None = None
    if level is Access.API_KEY:
        errors[401] = (
            "API keys are configured (PREDICTOR_API_KEYS) and none or a wrong one was sent."
        )
        # No key needed unless PREDICTOR_API_KEYS is set; then X-API-Key or a bearer key.
        security = [{}, {"apiKey": []}, {"apiKeyBearer": []}]
    elif level is Access.ADMIN:
        errors[401] = "No credentials: send Authorization: Bearer <admin token>."
        errors[403] = "Wrong token, or the API is off (PREDICTOR_ADMIN_TOKEN unset)."
        security = [{"adminToken": []}]
    for status in sorted(errors):
        responses.setdefault(str(status), _json(_ref(error_model), errors[status]))
    out: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": endpoint.replace(".", "_") + ("" if method == "get" else f"_{method}"),
        "responses": responses,
    }
    if op.description:
        out["description"] = op.description
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": PATH_DESCRIPTIONS.get(name, name),
            "schema": {"type": "string", "minLength": 1},
            "example": PATH_EXAMPLES.get(name, "x"),
        }
        for name in arguments
    ]
    parameters += list(op.parameters)
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        used.add(op.body)
        out["requestBody"] = {
            "required": op.body_required,
            "content": {JSON: {"schema": _ref(op.body)}},
        }
    if security is not None:
        out["security"] = security
    return out, used


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route ``app`` serves."""
    paths: dict[str, dict[str, Any]] = {}
    models: set[Model] = set()
    tags: list[str] = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        arguments = _PARAMETER.findall(rule.rule)
        path = _PARAMETER.sub(r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            op, used = _operation_for(path, method.lower(), rule.endpoint, view, arguments)
            paths.setdefault(path, {})[method.lower()] = op
            tags.extend(op["tags"])
            models |= used
    _, definitions = models_json_schema(
        [(m, "serialization") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Predictor",
            "version": __version__,
            "description": "Serve scikit-learn models: the seed route, KServe V1, the Open "
            "Inference Protocol (V2) with the model repository and statistics extensions, "
            "health and metrics. Generated from the service's typed models.",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": n} for n in dict.fromkeys([*TAGS, *tags])],
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "apiKeyBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key as a bearer token (prediction routes).",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "PREDICTOR_ADMIN_TOKEN (as a bearer token or X-API-Key).",
                },
            },
        },
    }


_DOCUMENT = "openapi_document"


@bp.get("/openapi.json")
@auth.public
@operation(
    "This document",
    "meta",
    ok={JSON: {"schema": {"type": "object", "required": ["openapi", "paths"]}}},
)
def openapi() -> Response:
    cached = current_app.extensions.get(_DOCUMENT)
    if cached is None:  # built once per app: the routes do not change after start
        cached = current_app.extensions[_DOCUMENT] = orjson.dumps(build_document(current_app))
    return Response(cached, mimetype=JSON)
