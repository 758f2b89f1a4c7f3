"""Liveness, readiness and the metrics endpoint."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from .. import metrics
from ..http import json_response
from ..state import state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "alive"})


@bp.get("/readyz")
def readyz() -> Response:
    st = state(current_app)
    if st.is_draining():
        return json_response({"status": "draining"}, 503)
    if not st.registry.ready():
        return json_response(
            {
                "status": "not ready",
                "models": [s.__dict__ for s in st.registry.status()],
            },
            503,
        )
    body = {"status": "ready", "models": [m.describe() for m in st.registry.loaded()]}
    broken = [s.__dict__ for s in st.registry.status() if s.state != "READY" or s.reason]
    if broken:  # models that cannot serve (or serve an older version) never block readiness
        body["unavailable"] = broken
    return json_response(body)


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)
