"""``GET /openapi.json``: the OpenAPI document of every route (service/openapi_spec.py)."""

from __future__ import annotations

from functools import cache

import orjson
from flask import Blueprint, Response

from ..http import JSON
from ..openapi_spec import build_spec

bp = Blueprint("openapi", __name__)


@cache
def _document() -> bytes:
    return orjson.dumps(build_spec())


@bp.get("/openapi.json")
def openapi() -> Response:
    return Response(_document(), mimetype=JSON)
