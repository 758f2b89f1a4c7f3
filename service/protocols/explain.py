"""``POST /v1/models/{name}[/versions/{v}]:explain``: per-feature contributions per row.

Same body as ``:predict`` (``{"instances": [...]}``, rows ordered or named);
same access (an API key when keys are configured). The answer per row:
``prediction``, ``output`` (the number explained), ``output_kind``,
``base_value``, ``contributions`` (one per feature, in the order of
``features``) and ``method``; docs/explain.md has the details. An optional
``"output_kind": "log_odds"`` asks a logistic regression or gradient boosting
classifier for its log-odds explanation instead of the probability one.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from .. import auth
from ..explain.plane import encode, explanations, output_kind_of
from ..http import json_response, read_json
from ..state import plane
from ..validation import rows_from_instances
from . import schemas
from .openapi import BODY_ERRORS, operation

bp = Blueprint("explain", __name__)
EXPLAIN = {
    "ok": schemas.ExplainResponse,
    "body": schemas.ExplainRequest,
    "errors": {
        **BODY_ERRORS,
        501: "No exact explainer for this model's family or preprocessing; the message says why.",
        503: "The model is not loaded, or its estimator failed verification when loaded.",
    },
}


@bp.post("/v1/models/<name>:explain")
@auth.api_key
@operation("Explain predictions (V1)", "v1", **EXPLAIN)
def explain(name: str) -> Response:
    return _explain(name, None)


@bp.post("/v1/models/<name>/versions/<version>:explain")
@auth.api_key
@operation("Explain predictions with a version (V1)", "v1", **EXPLAIN)
def explain_version(name: str, version: str) -> Response:
    return _explain(name, version)


def _explain(name: str, version: str | None) -> Response:
    dp = plane()
    model = dp.model(name, version)
    payload = read_json(dp.settings.MAX_BODY_BYTES)
    rows = rows_from_instances(payload, model.manifest.features, dp.settings.MAX_ROWS)
    answers = explanations(current_app).explain(model, rows, output_kind_of(payload))
    return json_response(
        {
            "model": model.name,
            "version": model.version,
            "features": model.manifest.feature_names,
            "explanations": encode(model, answers),
        }
    )
