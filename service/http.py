"""HTTP plumbing shared by every route: JSON in and out, errors, request ids, metrics."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import orjson
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import canary, metrics
from .auth import KEY_ID_HEADER, ApiKeys, is_prediction_request
from .errors import PredictorError

log = logging.getLogger("predictor.http")

JSON = "application/json"
REQUEST_ID = "X-Request-ID"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers, mimetype=JSON)


def read_json(max_bytes: int) -> Any:
    """The request body parsed as JSON, or a PredictorError saying exactly what is wrong."""
    mimetype = request.mimetype
    if mimetype != JSON and not mimetype.endswith("+json"):
        raise PredictorError(
            415,
            "unsupported_media_type",
            f"expected Content-Type: application/json, got {mimetype or 'none'}",
        )
    length = request.content_length
    if length is not None and length > max_bytes:
        raise body_too_large(length, max_bytes)
    data = request.get_data(cache=False)
    if len(data) > max_bytes:
        raise body_too_large(len(data), max_bytes)
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


def body_too_large(size: int | None, max_bytes: int) -> PredictorError:
    got = f"{size} bytes" if size is not None else "a larger body"
    return PredictorError(
        413, "payload_too_large", f"request body of {got} exceeds the limit of {max_bytes} bytes"
    )


def wants_probabilities(payload: Any) -> bool:
    """``"probabilities": true`` in the body or ``?probabilities=true`` in the URL."""
    if isinstance(payload, dict) and payload.get("probabilities") is True:
        return True
    return request.args.get("probabilities", "").lower() in {"1", "true", "yes"}


def install(app: Flask, max_bytes: int, api_keys: ApiKeys | None = None) -> None:
    """Error handlers and per-request hooks (request id, metrics, API keys) for the app."""

    @app.errorhandler(PredictorError)
    def _predictor_error(exc: PredictorError) -> Response:
        return json_response(exc.to_dict(), exc.status)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> Response:
        return json_response(body_too_large(request.content_length, max_bytes).to_dict(), 413)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 404:
            message = f"no route for {request.method} {request.path}"
        elif exc.code == 405:
            allowed = (
                ", ".join(sorted(exc.valid_methods or [])) if hasattr(exc, "valid_methods") else ""
            )
            message = f"{request.method} is not allowed on {request.path}; use {allowed}"
            # RFC 9110: a 405 lists the allowed methods.
            body = {"error": {"code": code, "message": message}}
            return json_response(body, 405, headers={"Allow": allowed})
        return json_response({"error": {"code": code, "message": message}}, exc.code or 500)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error (request id %s)", g.get("request_id"))
        return json_response(
            {"error": {"code": "internal_error", "message": "internal error; see the service log"}},
            500,
        )

    @app.before_request
    def _start() -> None:
        g.start = time.perf_counter()
        g.request_id = request.headers.get(REQUEST_ID) or uuid.uuid4().hex
        metrics.INFLIGHT.inc()
        if api_keys is not None and is_prediction_request(request.method, request.path):
            g.api_key_id = api_keys.check_request()

    known_methods: set[str] = set()  # filled on first use: blueprints register after install

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
        route = rule.rule if rule is not None else "unmatched"
        status = str(response.status_code)
        method = method_label()
        start = g.get("start")
        if start is not None:
            metrics.HTTP_DURATION.labels(route, method, status).observe(time.perf_counter() - start)
        metrics.HTTP_REQUESTS.labels(route, method, status).inc()
        canary.record(response.status_code, start)  # per-version metrics (current vs canary)
        if response.status_code >= 400:
            log.info(
                "%s %s -> %s (request id %s)",
                request.method, request.path, status, g.get("request_id"),
            )  # fmt: skip
        return response

    @app.teardown_request
    def _done(_exc: BaseException | None) -> None:
        if g.get("start") is not None:
            metrics.INFLIGHT.dec()
