"""The HTTP edge shared by every route: one body reader, JSON out, errors in each
protocol's own shape, request ids, metrics, and the access class each view declares.

Transports (service/protocols/) decode a request with ``read_json`` / ``read_body``,
call the data plane and encode with ``json_response``; whatever they raise is shaped
here, once, by the protocol the path belongs to:

- ``/v2`` and below (Open Inference Protocol): ``{"error": "<message>"}``;
- everything else (seed ``/predict``, V1, health, documents):
  ``{"error": {"code": "<stable code>", "message": "<message>"}}``.

A transport with its own error shape registers it for its path prefix with
``error_shape`` (docs/extending.md, "Adding a transport").
"""

from __future__ import annotations

import logging
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import orjson
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import canary, metrics
from .auth import KEY_ID_HEADER, AccessPolicy, access_of
from .core import Prediction
from .dataplane import DataPlane
from .errors import PredictorError, bad_input

log = logging.getLogger("predictor.http")

JSON = "application/json"
REQUEST_ID = "X-Request-ID"
ENCODINGS = ("gzip", "deflate")  # Content-Encoding accepted on every route


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers, mimetype=JSON)


# --- reading bodies ----------------------------------------------------------


def read_body(max_bytes: int) -> bytes:
    """The raw request body, decompressed when sent gzip/deflate, never over ``max_bytes``
    (413): the limit holds for the body as sent and for what it inflates to."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise body_too_large(length, max_bytes)
    try:
        data = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise body_too_large(None, max_bytes) from None
    if len(data) > max_bytes:
        raise body_too_large(len(data), max_bytes)
    return decompress(data, request.headers.get("Content-Encoding", ""), max_bytes)


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


def read_json(max_bytes: int) -> Any:
    """The request body parsed as JSON, or a PredictorError saying exactly what is wrong."""
    mimetype = request.mimetype
    if mimetype != JSON and not mimetype.endswith("+json"):
        raise PredictorError(
            415,
            "unsupported_media_type",
            f"expected Content-Type: application/json, got {mimetype or 'none'}",
        )
    return parse_json(read_body(max_bytes))


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


def wants_probabilities(payload: Any) -> bool:
    """``"probabilities": true`` in the body or ``?probabilities=true`` in the URL."""
    if isinstance(payload, dict) and payload.get("probabilities") is True:
        return True
    if not request.query_string:  # the usual request: no query string to parse
        return False
    return request.args.get("probabilities", "").lower() in {"1", "true", "yes"}


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


def error_response(exc: PredictorError, headers: dict[str, str] | None = None) -> Response:
    """The error in the shape of the protocol the request's path belongs to."""
    body: Any = shape_for(request.path)(exc)
    headers = dict(headers or {})
    if exc.status == 401:  # RFC 9110: a 401 says how to authenticate
        headers["WWW-Authenticate"] = 'Bearer realm="predictor"'
    return json_response(body, exc.status, headers=headers or None)


def _from_http_exception(exc: HTTPException) -> tuple[PredictorError, dict[str, str]]:
    code = (exc.name or "error").lower().replace(" ", "_")
    status = exc.code or 500
    if status == 404:
        return PredictorError(404, code, f"no route for {request.method} {request.path}"), {}
    if status == 405:
        allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or []))
        message = f"{request.method} is not allowed on {request.path}; use {allowed}"
        return PredictorError(405, code, message), {"Allow": allowed}  # RFC 9110
    return PredictorError(status, code, exc.description or exc.name), {}


# --- the app's hooks ------------------------------------------------------------


def install(app: Flask, plane: DataPlane, policy: AccessPolicy) -> None:
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
        error, headers = _from_http_exception(exc)
        return error_response(error, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error (request id %s)", g.get("request_id"))
        return error_response(
            PredictorError(500, "internal_error", "internal error; see the service log")
        )

    @app.before_request
    def _start() -> None:
        g.start = time.perf_counter()
        g.request_id = request.headers.get(REQUEST_ID) or uuid.uuid4().hex
        metrics.INFLIGHT.inc()
        view = app.view_functions.get(request.endpoint) if request.endpoint else None
        if view is not None and request.method != "OPTIONS":
            g.api_key_id = policy.check(access_of(view), request.headers)
        plane.catch_up()

    known_methods: set[str] = set()  # filled on first use: blueprints register after install
    # (route, method, status) -> bound children; bounded like the labels themselves.
    http_metrics: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def method_label() -> str:
        """The request's method when a route allows it, else "other": metrics stay bounded."""
        if not known_methods:
            known_methods.update(m for rule in app.url_map.iter_rules() for m in rule.methods or ())
        return request.method if request.method in known_methods else "other"

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers[REQUEST_ID] = g.get("request_id", "")
        response.headers["X-Content-Type-Options"] = "nosniff"
        key_id = g.get("api_key_id")
        if key_id:
            response.headers[KEY_ID_HEADER] = key_id
        rule = request.url_rule
        key = (rule.rule if rule is not None else "unmatched", method_label(),
               response.status_code)  # fmt: skip
        bound = http_metrics.get(key)
        if bound is None:  # .labels() per request is not free: bind once per series
            labels = (key[0], key[1], str(key[2]))
            bound = http_metrics[key] = (
                metrics.HTTP_DURATION.labels(*labels),
                metrics.HTTP_REQUESTS.labels(*labels),
            )
        start = g.get("start")
        if start is not None:
            bound[0].observe(time.perf_counter() - start)
        bound[1].inc()
        canary.record(response.status_code, start)  # per-version metrics (current vs canary)
        if response.status_code >= 400:
            log.info(
                "%s %s -> %s (request id %s)",
                request.method, request.path, response.status_code, g.get("request_id"),
            )  # fmt: skip
        return response

    @app.teardown_request
    def _done(_exc: BaseException | None) -> None:
        if g.get("start") is not None:
            metrics.INFLIGHT.dec()
