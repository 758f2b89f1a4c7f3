"""The Open Inference Protocol's calls over the data plane, shared by REST V2 and gRPC.

Both transports decode their own wire format into tensors (``v2_tensors.Tensor``) and
requested outputs, call ``model_metadata`` or ``infer`` here, and encode what comes back;
so model metadata, output names and datatypes, and which outputs a model offers are said
once. Outputs are named as MLServer's scikit-learn runtime names them: ``predict`` (the
estimator's raw ``predict()``), ``predict_proba`` and, when asked, ``explanation``;
without requested outputs only ``predict`` is returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import Prediction
from ..dataplane import DataPlane
from ..errors import bad_input
from ..explain.plane import Explanations
from ..manifest import Manifest
from ..models.loading import LoadedModel
from .v2_explain import EXPLANATION, explanation_tensor
from .v2_tensors import RequestedOutput, Tensor, feature_datatype, tensors_to_rows

PREDICT, PREDICT_PROBA = "predict", "predict_proba"


@dataclass(frozen=True)
class InferOutput:
    """One output tensor to encode: what was asked (its binary choice) and its values."""

    requested: RequestedOutput
    datatype: str
    array: np.ndarray

    @property
    def name(self) -> str:
        return self.requested.name


@dataclass(frozen=True)
class InferAnswer:
    prediction: Prediction  # cache status and the rest, for the transport's headers
    outputs: list[InferOutput]


def model_metadata(m: Manifest, versions: list[str]) -> dict[str, Any]:
    """The protocol's model metadata (name, versions, platform, inputs, outputs, parameters)."""
    outputs: list[dict[str, Any]] = [
        {"name": PREDICT, "datatype": predict_datatype(m), "shape": [-1]}
    ]
    parameters: dict[str, Any] = {"task": m.task, "version": m.version}
    if m.task == "classification":
        outputs.append(
            {"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, len(m.classes or [])]}
        )
        parameters.update(classes=m.classes, labels=m.output_labels)
    return {
        "name": m.name,
        "versions": versions,
        "platform": "sklearn",
        "inputs": [
            {"name": f.name, "datatype": feature_datatype(f), "shape": [-1]} for f in m.features
        ],
        "outputs": outputs,
        "parameters": parameters,
    }


def predict_datatype(m: Manifest) -> str:
    """What ``predict()`` returns: the class values' type, or FP64 for a regressor."""
    if m.task != "classification" or not m.classes:
        return "FP64"
    if all(type(c) is bool for c in m.classes):
        return "BOOL"
    if all(type(c) is int for c in m.classes):
        return "INT64"
    if all(type(c) in (int, float) for c in m.classes):
        return "FP64"
    return "BYTES"


def outputs_wanted(
    model: LoadedModel, requested: list[RequestedOutput]
) -> dict[str, RequestedOutput]:
    """The outputs to answer, by name; 400 naming the available ones for any other."""
    has_proba = model.is_classifier and model.runtime.has_proba
    available = [PREDICT, PREDICT_PROBA, EXPLANATION] if has_proba else [PREDICT, EXPLANATION]
    if not requested:
        return {PREDICT: RequestedOutput(PREDICT, None)}
    wanted: dict[str, RequestedOutput] = {}
    for out in requested:
        if out.name not in available:
            raise bad_input(
                "unknown_output",
                f"model {model.name!r} has no output {out.name!r}; available: {available}",
            )
        wanted[out.name] = out
    return wanted


def infer(
    dp: DataPlane,
    explanations: Explanations,
    model: LoadedModel,
    inputs: list[Tensor],
    requested: list[RequestedOutput],
) -> InferAnswer:
    """Validate the tensors into rows, predict through the data plane, shape the outputs
    (an ``explanation`` output from the same rows, protocols/v2_explain.py)."""
    wanted = outputs_wanted(model, requested)
    rows = tensors_to_rows(inputs, model.manifest.features, dp.settings.MAX_ROWS)
    result = dp.predict(model, rows, with_proba=PREDICT_PROBA in wanted)
    outputs = []
    for out in wanted.values():
        if out.name == EXPLANATION:
            datatype, array = explanation_tensor(explanations, model, rows, out)
        elif out.name == PREDICT:
            datatype = predict_datatype(model.manifest)
            array = np.asarray(result.raw, dtype=object if datatype == "BYTES" else None)
        elif result.proba is not None:
            datatype, array = "FP64", np.asarray(result.proba, dtype=np.float64)
        else:  # the runtime gave no probabilities after all
            raise bad_input("unknown_output", f"model {model.name!r} gives no predict_proba")
        outputs.append(InferOutput(out, datatype, array))
    return InferAnswer(result, outputs)
