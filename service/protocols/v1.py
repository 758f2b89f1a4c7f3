"""KServe V1 / TensorFlow Serving REST: ``/v1/models/{name}[/versions/{v}]:predict``."""

from __future__ import annotations

from flask import Blueprint, Response
from werkzeug.wrappers import Request

from .. import auth
from ..dataplane import DataPlane
from ..http import (
    Answer,
    json_answer,
    json_response,
    prediction_headers,
    read_json,
    respond,
    wants_probabilities,
)
from ..state import plane
from ..validation import rows_from_instances
from . import schemas
from .openapi import BODY_ERRORS, PROBABILITIES, operation

bp = Blueprint("v1", __name__)
PREDICT = {
    "ok": schemas.PredictResponse,
    "body": schemas.PredictRequest,
    "errors": BODY_ERRORS,
    "parameters": (PROBABILITIES,),
}


@bp.get("/v1/models")
@auth.public
@operation("List models", "v1", ok=schemas.ModelList)
def list_models() -> Response:
    dp = plane()
    models = [dp.describe_model(name) for name in dp.model_names()]
    return json_response({"models": models, "default_model": dp.settings.DEFAULT_MODEL})


@bp.get("/v1/models/<name>")
@auth.public
@operation("Describe a model", "v1", ok=schemas.ModelDescription)
def model_metadata(name: str) -> Response:
    return json_response(plane().describe_model(name, strict=True))


@bp.post("/v1/models/<name>:predict")
@auth.api_key
@operation("Predict (V1)", "v1", **PREDICT)
def predict(name: str) -> Response:
    return respond(answer_predict(plane(), None, name, None))


@bp.post("/v1/models/<name>/versions/<version>:predict")
@auth.api_key
@operation("Predict with a version (V1)", "v1", **PREDICT)
def predict_version(name: str, version: str) -> Response:
    return respond(answer_predict(plane(), None, name, version))


def answer_predict(dp: DataPlane, req: Request | None, name: str, version: str | None) -> Answer:
    """V1's answer (also what the lean dispatch calls, with its own request)."""
    model = dp.model(name, version)
    payload = read_json(dp.settings.MAX_BODY_BYTES, req)
    rows = rows_from_instances(payload, model.manifest.features, dp.settings.MAX_ROWS)
    result = dp.predict(model, rows, wants_probabilities(payload, req))
    body = {"predictions": result.values, "model": model.name, "version": model.version}
    if result.proba is not None:
        body["probabilities"] = result.proba_by_label()
    return json_answer(body, headers=prediction_headers(dp, result))
