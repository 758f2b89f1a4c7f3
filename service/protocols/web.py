"""The web page at ``/`` to try a model: static HTML, JS and CSS from service/web/.

No build step and nothing from another origin, so the page can carry a strict
Content-Security-Policy (``default-src 'self'``: no inline script or style).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from flask import Blueprint, Response

from .. import auth
from .openapi import TEXT, operation

bp = Blueprint("web", __name__)

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; object-src 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",  # revalidate: a new release shows at once
}


@cache
def _read(name: str) -> bytes:
    return (WEB_DIR / name).read_bytes()


def _serve(name: str, mimetype: str) -> Response:
    response = Response(_read(name), mimetype=mimetype)
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.get("/")
@auth.public
@operation("Web page to try a model", "web", ok={"text/html": TEXT})
def index() -> Response:
    return _serve("index.html", "text/html")


@bp.get("/web/app.js")
@auth.public
@operation("Web page script", "web", ok={"text/javascript": TEXT})
def script() -> Response:
    return _serve("app.js", "text/javascript")


@bp.get("/web/explain.js")
@auth.public
@operation("Web page explanation chart script", "web", ok={"text/javascript": TEXT})
def explain_script() -> Response:
    return _serve("explain.js", "text/javascript")


@bp.get("/web/style.css")
@auth.public
@operation("Web page style", "web", ok={"text/css": TEXT})
def style() -> Response:
    return _serve("style.css", "text/css")


@bp.get("/web/favicon.svg")
@auth.public
@operation("Web page icon", "web", ok={"image/svg+xml": TEXT})
def favicon() -> Response:
    return _serve("favicon.svg", "image/svg+xml")
