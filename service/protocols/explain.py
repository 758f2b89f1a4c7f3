"""``POST /v1/models/{name}[/versions/{v}]:explain``: per-feature contributions per row.

Same body as ``:predict`` (``{"instances": [...]}``, rows ordered or named);
same access (an API key when keys are configured: service/auth.py). The
answer per row: ``prediction``, ``output`` (the number explained),
``output_kind``, ``base_value``, ``contributions`` (one per feature, in the
order of ``features``) and ``method``; docs/explain.md has the details.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from ..explain.plane import encode, explanations
from ..http import json_response, read_json
from ..state import state
from ..validation import rows_from_instances

bp = Blueprint("explain", __name__)


@bp.post("/v1/models/<name>:explain")
def explain(name: str) -> Response:
    return _explain(name, None)


@bp.post("/v1/models/<name>/versions/<version>:explain")
def explain_version(name: str, version: str) -> Response:
    return _explain(name, version)


def _explain(name: str, version: str | None) -> Response:
    st = state(current_app)
    model = st.registry.get(name, version)
    payload = read_json(st.settings.MAX_BODY_BYTES)
    rows = rows_from_instances(payload, model.manifest.features, st.settings.MAX_ROWS)
    answers = explanations(current_app).explain(model, rows)
    return json_response(
        {
            "model": model.name,
            "version": model.version,
            "features": model.manifest.feature_names,
            "explanations": encode(model, answers),
        }
    )
