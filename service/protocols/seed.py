"""The seed article's route: ``POST /predict`` with ``{"input": row or rows}``."""

from __future__ import annotations

from flask import Blueprint, Response

from .. import auth
from ..http import json_response, prediction_headers, read_json, wants_probabilities
from ..state import plane
from ..validation import rows_from_seed
from . import schemas
from .openapi import BODY_ERRORS, PROBABILITIES, operation

bp = Blueprint("seed", __name__)


@bp.post("/predict")
@auth.api_key
@operation(
    "Predict (seed route)",
    "seed",
    ok=schemas.SeedResponse,
    body=schemas.SeedRequest,
    errors=BODY_ERRORS,
    parameters=(PROBABILITIES,),
)
def predict() -> Response:
    dp = plane()
    settings = dp.settings
    payload = read_json(settings.MAX_BODY_BYTES)
    name = settings.DEFAULT_MODEL
    version = None
    if isinstance(payload, dict):
        name = payload.get("model", name) if isinstance(payload.get("model"), str) else name
        version = payload.get("version") if isinstance(payload.get("version"), str) else None
    model = dp.model(name, version)
    rows = rows_from_seed(payload, model.manifest.features, settings.MAX_ROWS)
    result = dp.predict(model, rows, wants_probabilities(payload))
    body = {"prediction": result.values, "model": model.name, "version": model.version}
    if result.proba is not None:
        body["probabilities"] = result.proba_by_label()
    return json_response(body, headers=prediction_headers(dp, result))
