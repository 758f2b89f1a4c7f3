"""The seed article's route: ``POST /predict`` with ``{"input": row or rows}``."""

from __future__ import annotations

from flask import Blueprint, Response
from werkzeug.wrappers import Request

from .. import auth
from ..dataplane import DataPlane
from ..http import Answer, json_answer, prediction_headers, read_json, respond, wants_probabilities
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
    return respond(answer_predict(plane(), None))


def answer_predict(dp: DataPlane, req: Request | None) -> Answer:
    """The seed route's answer (also what the lean dispatch calls, with its own request)."""
    settings = dp.settings
    payload = read_json(settings.MAX_BODY_BYTES, req)
    name = settings.DEFAULT_MODEL
    version = None
    if isinstance(payload, dict):
        name = payload.get("model", name) if isinstance(payload.get("model"), str) else name
        version = payload.get("version") if isinstance(payload.get("version"), str) else None
    model = dp.model(name, version)
    rows = rows_from_seed(payload, model.manifest.features, settings.MAX_ROWS)
    result = dp.predict(model, rows, wants_probabilities(payload, req))
    body = {"prediction": result.values, "model": model.name, "version": model.version}
    if result.proba is not None:
        body["probabilities"] = result.proba_by_label()
    return json_answer(body, headers=prediction_headers(dp, result))
