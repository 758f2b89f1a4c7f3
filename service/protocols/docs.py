"""``GET /docs``: Swagger UI over ``/openapi.json``, served from the packaged
``swagger-ui-bundle`` assets (no CDN), under the web page's Content-Security-Policy."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from flask import Blueprint, Response
from swagger_ui_bundle import swagger_ui_path

from .. import auth
from .openapi import TEXT, operation
from .web import SECURITY_HEADERS, WEB_DIR

bp = Blueprint("docs", __name__)

ASSETS = Path(str(swagger_ui_path))
# Swagger UI draws its icons from data: URIs; nothing else is loosened.
DOCS_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": SECURITY_HEADERS["Content-Security-Policy"]
    + "; img-src 'self' data:",
}


@cache
def _read(path: Path) -> bytes:
    return path.read_bytes()


def _serve(path: Path, mimetype: str) -> Response:
    response = Response(_read(path), mimetype=mimetype)
    response.headers.update(DOCS_HEADERS)
    return response


@bp.get("/docs")
@auth.public
@operation("API documentation (Swagger UI)", "meta", ok={"text/html": TEXT})
def index() -> Response:
    return _serve(WEB_DIR / "docs" / "index.html", "text/html")


@bp.get("/docs/init.js")
@auth.public
@operation("Swagger UI start script", "meta", ok={"text/javascript": TEXT})
def init_script() -> Response:
    return _serve(WEB_DIR / "docs" / "init.js", "text/javascript")


@bp.get("/docs/swagger-ui-bundle.js")
@auth.public
@operation("Swagger UI script", "meta", ok={"text/javascript": TEXT})
def bundle() -> Response:
    return _serve(ASSETS / "swagger-ui-bundle.js", "text/javascript")


@bp.get("/docs/swagger-ui.css")
@auth.public
@operation("Swagger UI style", "meta", ok={"text/css": TEXT})
def style() -> Response:
    return _serve(ASSETS / "swagger-ui.css", "text/css")
