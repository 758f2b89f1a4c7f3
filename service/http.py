"""The HTTP edge shared by every route: one body reader, JSON out, errors in each
protocol's own shape, request ids, metrics, and the access class each view declares.

Transports (service/protocols/) decode a request with ``read_json`` / ``read_body``,
call the data plane and encode with ``json_response`` (or, for the prediction routes the
lean dispatch also answers, an ``Answer``); whatever they raise is shaped here, once, by
the protocol the path belongs to:

- ``/v2`` and below (Open Inference Protocol): ``{"error": "<message>"}``;
- everything else (seed ``/predict``, V1, health, documents):
  ``{"error": {"code": "<stable code>", "message": "<message>"}}``.

A transport with its own error shape registers it for its path prefix with
``error_shape`` (docs/extending.md, "Adding a transport").
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wrappers import Request

from . import canary, metrics, request_scope
from .auth import KEY_ID_HEADER, AccessPolicy, access_of
from .core import Prediction
from .dataplane import DataPlane
from .errors import PredictorError, bad_input
from .request_scope import Scope

log = logging.getLogger("predictor.http")

JSON = "application/json"
REQUEST_ID = "X-Request-ID"
ENCODINGS = ("gzip", "deflate")  # Content-Encoding accepted on every route


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers, mimetype=JSON)


@dataclass(slots=True)
class Answer:
    """A response before either dispatch sends it: Flask's (``respond``) or the lean one."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    mimetype: str = JSON


def json_answer(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return Answer(orjson.dumps(body), headers or {}, status)


def respond(answer: Answer) -> Response:
    """The Flask Response of an Answer (what a Flask view returns)."""
    return Response(
        answer.body, status=answer.status, headers=answer.headers or None, mimetype=answer.mimetype
    )


# --- reading bodies ----------------------------------------------------------
# Each reader takes the request explicitly (``req``; Flask's current request when None):
# the lean dispatch passes a plain werkzeug Request over the same environ.


def read_body(max_bytes: int, req: Request | None = None) -> bytes:
    """The raw request body, decompressed when sent gzip/deflate, never over ``max_bytes``
    (413): the limit holds for the body as sent and for what it inflates to."""
    req = request if req is None else req
    length = req.content_length
    if length is not None and length > max_bytes:
        raise body_too_large(length, max_bytes)
    try:
        data = req.get_data(cache=False)
    except RequestEntityTooLarge:
        raise body_too_large(None, max_bytes) from None
    if len(data) > max_bytes:
        raise body_too_large(len(data), max_bytes)
    return decompress(data, req.headers.get("Content-Encoding", ""), max_bytes)


def decompress(data: bytes, encoding: str, max_bytes: int) -> bytes:
    """``data`` decoded per its Content-Encoding, inflating at most ``max_bytes`` (413 over)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding not in ENCODINGS:
        raise PredictorError(
            415,
            "unsupported_encoding",
            f"Content-Encoding {encoding} is not supported; send gzip, deflate or identity",
        )
    # Bounded: a small compressed body must not expand past the limit (a zip bomb).
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        body = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise bad_input("invalid_body", f"body is not valid {encoding}: {exc}") from None
    if len(body) > max_bytes or inflater.unconsumed_tail:
        raise PredictorError(
            413,
            "payload_too_large",
            f"request body inflates past the limit of {max_bytes} bytes ({encoding})",
        )
    return body


def read_json(max_bytes: int, req: Request | None = None) -> Any:
    """The request body parsed as JSON, or a PredictorError saying exactly what is wrong."""
    req = request if req is None else req
    mimetype = req.mimetype
    if mimetype != JSON and not mimetype.endswith("+json"):
        raise PredictorError(
            415,
            "unsupported_media_type",
            f"expected Content-Type: application/json, got {mimetype or 'none'}",
        )
    return parse_json(read_body(max_bytes, req))


def parse_json(data: bytes) -> Any:
    """orjson, with the reasons a client can act on (NaN/Infinity are not JSON)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if b"NaN" in data or b"Infinity" in data or "infinity" in str(exc):
            raise PredictorError(
                400,
                "non_finite_value",
                "NaN and Infinity are not JSON numbers and no model accepts them: "
                "send finite numbers",
            ) from exc
        raise PredictorError(400, "invalid_json", f"request body is not valid JSON: {exc}") from exc


def read_optional_object(max_bytes: int) -> dict[str, Any]:
    """An optional JSON object body (none, empty or ``{}`` all mean no options)."""
    data = read_body(max_bytes)
    if not data.strip():
        return {}
    payload = parse_json(data)
    if not isinstance(payload, dict):
        raise bad_input("invalid_request", "the request body must be a JSON object")
    return payload


def body_too_large(size: int | None, max_bytes: int) -> PredictorError:
    got = f"{size} bytes" if size is not None else "a larger body"
    return PredictorError(
        413, "payload_too_large", f"request body of {got} exceeds the limit of {max_bytes} bytes"
    )


def wants_probabilities(payload: Any, req: Request | None = None) -> bool:
    """``"probabilities": true`` in the body or ``?probabilities=true`` in the URL."""
    if isinstance(payload, dict) and payload.get("probabilities") is True:
        return True
    req = request if req is None else req
    if not req.query_string:  # the usual request: no query string to parse
        return False
    return req.args.get("probabilities", "").lower() in {"1", "true", "yes"}


def prediction_headers(plane: DataPlane, result: Prediction) -> dict[str, str]:
    """Which model and version answered, and whether the cache did (when there is one)."""
    headers = {"X-Model-Name": result.model.name, "X-Model-Version": result.model.version}
    if plane.caching:
        headers["X-Cache"] = result.cache_status
    return headers


# --- errors, shaped per protocol -------------------------------------------------


ErrorShape = Callable[[PredictorError], Any]
# Path prefix -> the body its protocol gives an error; the longest matching prefix wins.
_ERROR_SHAPES: dict[str, ErrorShape] = {}


def error_shape(prefix: str, schema: type | None = None) -> Callable[[ErrorShape], ErrorShape]:
    """Declare the error body of every answer under ``prefix`` (``/v2`` covers ``/v2`` and
    ``/v2/...``), unknown routes and 405s included; ``schema`` (a pydantic model) is what
    /openapi.json documents for those errors."""

    def register(shape: ErrorShape) -> ErrorShape:
        shape.openapi_schema = schema  # type: ignore[attr-defined]
        _ERROR_SHAPES[prefix.rstrip("/")] = shape
        return shape

    return register


def shape_for(path: str) -> ErrorShape:
    """The error shape of the protocol ``path`` belongs to (default: code and message)."""
    best, shape = "", PredictorError.to_dict
    for prefix, candidate in _ERROR_SHAPES.items():
        if (path == prefix or path.startswith(prefix + "/")) and len(prefix) > len(best):
            best, shape = prefix, candidate
    return shape


@error_shape("/v2")
def v2_error(exc: PredictorError) -> dict[str, str]:
    """The Open Inference Protocol's error body: one string."""
    return {"error": exc.message}


def is_v2(path: str) -> bool:
    return shape_for(path) is v2_error


def error_answer(exc: PredictorError, path: str, headers: dict[str, str] | None = None) -> Answer:
    """The error in the shape of the protocol ``path`` belongs to."""
    body: Any = shape_for(path)(exc)
    headers = dict(headers or {})
    if exc.status == 401:  # RFC 9110: a 401 says how to authenticate
        headers["WWW-Authenticate"] = 'Bearer realm="predictor"'
    return json_answer(body, exc.status, headers)


def error_response(exc: PredictorError, headers: dict[str, str] | None = None) -> Response:
    """The error in the shape of the protocol the current request's path belongs to."""
    return respond(error_answer(exc, request.path, headers))


def from_http_exception(
    exc: HTTPException, method: str, path: str
) -> tuple[PredictorError, dict[str, str]]:
    """werkzeug's HTTP error (404, 405, a body cut short...) as ours, with its headers."""
    code = (exc.name or "error").lower().replace(" ", "_")
    status = exc.code or 500
    if status == 404:
        return PredictorError(404, code, f"no route for {method} {path}"), {}
    if status == 405:
        allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or []))
        message = f"{method} is not allowed on {path}; use {allowed}"
        return PredictorError(405, code, message), {"Allow": allowed}  # RFC 9110
    return PredictorError(status, code, exc.description or exc.name), {}


INTERNAL_ERROR = "internal error; see the service log"


def edge_headers(scope: Scope | None) -> list[tuple[str, str]]:
    """The headers every answer carries: its request id, nosniff and the API key's id."""
    out = [
        (REQUEST_ID, scope.request_id if scope is not None else ""),
        ("X-Content-Type-Options", "nosniff"),
    ]
    if scope is not None and scope.api_key_id:
        out.append((KEY_ID_HEADER, scope.api_key_id))
    return out


class HttpMetrics:
    """Counts a finished request: HTTP and per-version metrics, and a log line for errors."""

    def __init__(self) -> None:
        # (route, method, status) -> bound children; bounded like the labels themselves.
        self._bound: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def record(
        self,
        route: str,
        method_label: str,
        status: int,
        scope: Scope | None,
        method: str,
        path: str,
    ) -> None:
        key = (route, method_label, status)
        bound = self._bound.get(key)
        if bound is None:  # .labels() per request is not free: bind once per series
            labels = (route, method_label, str(status))
            bound = self._bound[key] = (
                metrics.HTTP_DURATION.labels(*labels),
                metrics.HTTP_REQUESTS.labels(*labels),
            )
        bound[1].inc()
        if scope is not None:
            bound[0].observe(time.perf_counter() - scope.start)
            canary.record(status, scope)  # per-version metrics (current vs canary)
        if status >= 400:
            request_id = scope.request_id if scope is not None else ""
            log.info("%s %s -> %s (request id %s)", method, path, status, request_id)


# --- the app's hooks ------------------------------------------------------------


def install(app: Flask, plane: DataPlane, policy: AccessPolicy, http_metrics: HttpMetrics) -> None:
    """Error handlers and per-request hooks (request id, access, metrics) for the app."""
    max_bytes = plane.settings.MAX_BODY_BYTES

    @app.errorhandler(PredictorError)
    def _predictor_error(exc: PredictorError) -> Response:
        return error_response(exc)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> Response:
        return error_response(body_too_large(request.content_length, max_bytes))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        error, headers = from_http_exception(exc, request.method, request.path)
        return error_response(error, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        scope = request_scope.current()
        log.exception("unhandled error (request id %s)", scope.request_id if scope else None)
        return error_response(PredictorError(500, "internal_error", INTERNAL_ERROR))

    @app.before_request
    def _start() -> None:
        scope, g.scope_token = request_scope.begin(request.headers.get(REQUEST_ID))
        metrics.INFLIGHT.inc()
        view = app.view_functions.get(request.endpoint) if request.endpoint else None
        if view is not None and request.method != "OPTIONS":
            scope.api_key_id = policy.check(access_of(view), request.headers)
        plane.catch_up()

    known_methods: set[str] = set()  # filled on first use: blueprints register after install

    def method_label() -> str:
        """The request's method when a route allows it, else "other": metrics stay bounded."""
        if not known_methods:
            known_methods.update(m for rule in app.url_map.iter_rules() for m in rule.methods or ())
        return request.method if request.method in known_methods else "other"

    @app.after_request
    def _finish(response: Response) -> Response:
        scope = request_scope.current()
        for name, value in edge_headers(scope):
            response.headers[name] = value
        rule = request.url_rule
        route = rule.rule if rule is not None else "unmatched"
        status = response.status_code
        http_metrics.record(route, method_label(), status, scope, request.method, request.path)
        return response

    @app.teardown_request
    def _done(_exc: BaseException | None) -> None:
        token = g.pop("scope_token", None)
        if token is not None:
            metrics.INFLIGHT.dec()
            request_scope.end(token)
