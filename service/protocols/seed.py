"""The seed article's route: ``POST /predict`` with ``{"input": row or rows}``."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from ..http import json_response, read_json, wants_probabilities
from ..state import state
from ..validation import rows_from_seed

bp = Blueprint("seed", __name__)


@bp.post("/predict")
def predict() -> Response:
    st = state(current_app)
    payload = read_json(st.settings.MAX_BODY_BYTES)
    name = st.settings.DEFAULT_MODEL
    version = None
    if isinstance(payload, dict):
        name = payload.get("model", name) if isinstance(payload.get("model"), str) else name
        version = payload.get("version") if isinstance(payload.get("version"), str) else None
    model = st.registry.get(name, version)
    rows = rows_from_seed(payload, model.manifest.features, st.settings.MAX_ROWS)
    result = st.core.predict(model, rows, wants_probabilities(payload))
    body = {"prediction": result.values, "model": model.name, "version": model.version}
    if result.proba is not None:
        body["probabilities"] = result.proba_by_label()
    return json_response(body, headers=st.answer_headers(result))
