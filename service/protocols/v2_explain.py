"""The ``explanation`` output of a V2 infer request (REST and gRPC), over ``:explain``'s core.

The Open Inference Protocol has no explain endpoint or extension (KServe's V2
page: "V2 protocol does not currently support the explain endpoint"), so an
explanation is one more output a client names in ``outputs``, as MLServer's
Alibi runtime answers an output named ``explanation``:

    "outputs": [{"name": "predict"}, {"name": "explanation",
                 "parameters": {"output_kind": "log_odds"}}]     # parameters optional

It is a BYTES tensor of shape [N]: element i is the JSON object of row i, the
same fields as ``:explain`` answers (``output``, ``output_kind``,
``base_value``, ``contributions`` in ``features`` order, ``method``,
``probability``) plus ``features``. ``prediction`` is the class value the
``predict`` output carries (``label`` beside it when the model has display
labels). A model with no exact explainer answers 501 with the reason, as
``:explain`` does; the rows are the ones the other outputs were computed from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from ..errors import bad_input
from ..explain.plane import Explanations, output_kind_of
from ..models.loading import LoadedModel
from .v2_tensors import RequestedOutput

EXPLANATION = "explanation"
PARAMETERS = ("output_kind", "binary_data")  # what the explanation output accepts


def explanation_tensor(
    explanations: Explanations, model: LoadedModel, rows: np.ndarray, out: RequestedOutput
) -> tuple[str, np.ndarray]:
    """(datatype, [N] object array of JSON strings) for the requested ``explanation``."""
    unknown = sorted(set(out.parameters) - set(PARAMETERS))
    if unknown:
        raise bad_input(
            "unsupported_parameter",
            f"output {EXPLANATION!r}: unknown parameter{'s' * (len(unknown) > 1)} {unknown}; "
            f"it accepts {list(PARAMETERS)}",
        )
    answers = explanations.explain(model, rows, output_kind_of(out.parameters))
    features = model.manifest.feature_names
    label_of = model.label_of
    elements = np.empty(len(answers), dtype=object)
    for i, a in enumerate(answers):
        row: dict[str, Any] = {
            "prediction": a.prediction,
            "output": a.output,
            "output_kind": a.output_kind,
            "base_value": a.base_value,
            "contributions": a.contributions,
            "features": features,
            "method": a.method,
        }
        if label_of:
            row["label"] = label_of.get(a.prediction, str(a.prediction))
        if a.probability is not None:
            row["probability"] = a.probability
        elements[i] = orjson.dumps(row).decode()
    return "BYTES", elements
