"""The prediction routes answered without Flask's request machinery.

Flask stays the application: every route is declared on a Blueprint, documented in
/openapi.json and answered by Flask when this dispatch is off (``PREDICTOR_LEAN_DISPATCH=
false``) or the request is not one of these. For ``POST`` to the seed route, V1 predict
and V2 infer, Flask's request context, routing, signals, hooks and Response object cost
about 250 µs of a 520 µs in-process call (docs/benchmarks.md, "Levers"); this WSGI
middleware in front of ``app.wsgi_app`` runs the same per-request steps itself, around
the same answer functions the Flask views call:

- the request id, the in-flight gauge, the route's access class (api_key), the catch-up
  with other workers' repository calls (the steps of ``http.install``'s hooks);
- the answer: ``answer_predict`` / ``answer_infer`` of service/protocols/, reading the
  body with the same readers (a plain werkzeug Request over the same environ, with the
  app's body limit);
- errors in the protocol's own shape (``http.error_answer``), unexpected ones logged and
  answered 500;
- the same headers (``http.edge_headers``) and metrics (``http.HttpMetrics``), under the
  Flask route's template as the route label.

A path is taken here only when it is exactly one of those routes, in ASCII: anything
else (a trailing slash, ``//``, a percent-encoded name, another method) goes to Flask,
which redirects, 404s or 405s as before. tests/app/test_lean_dispatch.py sends every
kind of request through both dispatches and compares status, headers and body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial

from flask import Flask
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Request

from . import metrics, request_scope
from .auth import Access, AccessPolicy, access_of
from .dataplane import DataPlane
from .errors import PredictorError
from .http import (
    INTERNAL_ERROR,
    REQUEST_ID,
    Answer,
    HttpMetrics,
    body_too_large,
    edge_headers,
    error_answer,
    from_http_exception,
)
from .protocols import seed, v1, v2

log = logging.getLogger("predictor.http")

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
# (route template, answer) for a matched path; the answer gets the request.
Route = tuple[str, Callable[[Request], Answer]]
# The routes that name a model: path prefix and suffix around ``name`` or
# ``name/versions/version``, the Flask templates of both forms, and the answer.
NamedAnswer = Callable[[Flask, DataPlane, str, str | None, Request], Answer]
NAMED_ROUTES: tuple[tuple[str, str, str, str, NamedAnswer], ...] = (
    (
        "/v1/models/", ":predict",
        "/v1/models/<name>:predict", "/v1/models/<name>/versions/<version>:predict",
        lambda app, dp, name, version, req: v1.answer_predict(dp, req, name, version),
    ),
    (
        "/v2/models/", "/infer",
        "/v2/models/<name>/infer", "/v2/models/<name>/versions/<version>/infer",
        lambda app, dp, name, version, req: v2.answer_infer(app, req, name, version),
    ),
)  # fmt: skip
# The Flask route templates answered here (each must be a POST route of the app).
TEMPLATES = ("/predict", *(t for route in NAMED_ROUTES for t in route[2:4]))


def _status_line(status: int) -> str:
    """werkzeug's own status line for a code (``404 NOT FOUND``)."""
    return f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"


def _segments(rest: str) -> tuple[str, str | None] | None:
    """``name`` or ``name/versions/version`` (each a non-empty segment), else None."""
    parts = rest.split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
        return parts[0], parts[2]
    return None


class LeanDispatch:
    """WSGI middleware: the prediction routes here, every other request to Flask."""

    def __init__(
        self, app: Flask, plane: DataPlane, policy: AccessPolicy, http_metrics: HttpMetrics
    ) -> None:
        self.app = app
        self.flask_wsgi: WSGIApp = app.wsgi_app
        self.plane = plane
        self.policy = policy
        self.http_metrics = http_metrics
        # Each route's access class as its Flask view declares it; a template Flask does
        # not serve stops the app here rather than answer a route nobody declared.
        views = {r.rule: app.view_functions[r.endpoint] for r in app.url_map.iter_rules()
                 if "POST" in (r.methods or ())}  # fmt: skip
        missing = [t for t in TEMPLATES if t not in views]
        if missing:
            raise RuntimeError(f"lean dispatch: no Flask POST route for {missing}")
        self.access: dict[str, Access] = {t: access_of(views[t]) for t in TEMPLATES}

        class _Request(Request):
            max_content_length = app.config["MAX_CONTENT_LENGTH"]  # what Flask's would say

        self.request_class = _Request

    def route(self, path: str) -> Route | None:
        """The lean route of ``path`` (a POST), or None for Flask to answer."""
        if not path.isascii():
            return None  # werkzeug re-decodes non-ASCII paths; Flask does it exactly
        dp, app = self.plane, self.app
        if path == "/predict":
            return "/predict", lambda req: seed.answer_predict(dp, req)
        for prefix, suffix, unversioned, versioned, answer in NAMED_ROUTES:
            if path.startswith(prefix) and path.endswith(suffix):
                found = _segments(path[len(prefix) : -len(suffix)])
                if found is None:
                    return None
                name, version = found
                template = unversioned if version is None else versioned
                return template, partial(answer, app, dp, name, version)
        return None

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return self.flask_wsgi(environ, start_response)
        path = environ.get("PATH_INFO", "")
        found = self.route(path)
        if found is None:
            return self.flask_wsgi(environ, start_response)
        template, answer_of = found
        req = self.request_class(environ)
        scope, token = request_scope.begin(req.headers.get(REQUEST_ID))
        metrics.INFLIGHT.inc()
        try:
            answer = self._answer(req, scope, self.access[template], answer_of, path)
            headers = [
                ("Content-Type", answer.mimetype),
                ("Content-Length", str(len(answer.body))),
                *answer.headers.items(),
                *edge_headers(scope),
            ]
            self.http_metrics.record(template, "POST", answer.status, scope, "POST", path)
        finally:
            metrics.INFLIGHT.dec()
            request_scope.end(token)
        start_response(_status_line(answer.status), headers)
        return [answer.body]

    def _answer(
        self,
        req: Request,
        scope: request_scope.Scope,
        access: Access,
        answer_of: Callable[[Request], Answer],
        path: str,
    ) -> Answer:
        """The answer, or the error in the path's protocol shape (Flask's handlers' order)."""
        try:
            scope.api_key_id = self.policy.check(access, req.headers)
            self.plane.catch_up()
            return answer_of(req)
        except PredictorError as exc:
            return error_answer(exc, path)
        except RequestEntityTooLarge:
            error = body_too_large(req.content_length, self.plane.settings.MAX_BODY_BYTES)
            return error_answer(error, path)
        except HTTPException as exc:
            error, headers = from_http_exception(exc, "POST", path)
            return error_answer(error, path, headers)
        except Exception:
            log.exception("unhandled error (request id %s)", scope.request_id)
            return error_answer(PredictorError(500, "internal_error", INTERNAL_ERROR), path)
