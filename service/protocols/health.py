"""Liveness, readiness and the metrics endpoint (all public: probes carry no credentials)."""

from __future__ import annotations

from flask import Blueprint, Response

from .. import auth, metrics
from ..http import json_response
from ..state import plane
from . import schemas
from .openapi import operation

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@auth.public
@operation("Liveness", "health", ok=schemas.Liveness)
def healthz() -> Response:
    return json_response({"status": "alive" if plane().live() else "dead"})


@bp.get("/readyz")
@auth.public
@operation(
    "Readiness",
    "health",
    ok=schemas.Readiness,
    other={503: (schemas.Readiness, "Not ready, or draining.")},
)
def readyz() -> Response:
    readiness = plane().ready()
    body: dict = {"status": readiness.status}
    if readiness.status != "draining":
        body["models"] = readiness.models
    if readiness.unavailable:
        body["unavailable"] = readiness.unavailable
    return json_response(body, 200 if readiness.ready else 503)


@bp.get("/metrics")
@auth.public
@operation("Prometheus metrics", "health", ok={"text/plain": {"schema": {"type": "string"}}})
def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)
