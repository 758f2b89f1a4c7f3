"""KServe V1 / TensorFlow Serving REST: ``/v1/models/{name}[/versions/{v}]:predict``."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from ..http import json_response, read_json, wants_probabilities
from ..state import state
from ..validation import rows_from_instances

bp = Blueprint("v1", __name__)


@bp.get("/v1/models")
def list_models() -> Response:
    st = state(current_app)
    models = [st.describe_model(name) for name in st.store.names()]
    return json_response({"models": models, "default_model": st.settings.DEFAULT_MODEL})


@bp.get("/v1/models/<name>")
def model_metadata(name: str) -> Response:
    return json_response(state(current_app).describe_model(name, strict=True))


@bp.post("/v1/models/<name>:predict")
def predict(name: str) -> Response:
    return _predict(name, None)


@bp.post("/v1/models/<name>/versions/<version>:predict")
def predict_version(name: str, version: str) -> Response:
    return _predict(name, version)


def _predict(name: str, version: str | None) -> Response:
    st = state(current_app)
    model = st.registry.get(name, version)
    payload = read_json(st.settings.MAX_BODY_BYTES)
    rows = rows_from_instances(payload, model.manifest.features, st.settings.MAX_ROWS)
    result = st.core.predict(model, rows, wants_probabilities(payload))
    body = {"predictions": result.values, "model": model.name, "version": model.version}
    if result.proba is not None:
        body["probabilities"] = result.proba_by_label()
    return json_response(body, headers=st.answer_headers(result))
