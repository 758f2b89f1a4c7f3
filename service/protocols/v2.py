"""Open Inference Protocol (KServe V2) REST: health, metadata and infer.

Requests decode into validated rows (protocols/v2_tensors.py) and go through the
same prediction core, cache and metrics as every other route. Outputs are named
as MLServer's scikit-learn runtime names them: ``predict`` is the estimator's raw
``predict()`` output (class values for classifiers, e.g. INT64 0/1/2 for iris,
whose names the model metadata lists under ``parameters.labels``), and
``predict_proba`` the class probabilities. Without ``outputs`` in the request
only ``predict`` is returned, as MLServer does.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import orjson
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from .. import __version__ as _package_version
from ..errors import PredictorError, bad_input
from ..http import body_too_large, json_response
from ..manifest import Manifest
from ..models.loading import LoadedModel
from ..state import ServiceState, state
from .v2_tensors import (
    RequestedOutput,
    decode_request,
    encode_output,
    feature_datatype,
    tensors_to_rows,
    v2_error,
)

bp = Blueprint("v2", __name__)

SERVER_NAME = "predictor"
EXTENSIONS = ["model_repository", "binary_tensor_data"]
HEADER_LENGTH = "Inference-Header-Content-Length"
PREDICT, PREDICT_PROBA = "predict", "predict_proba"


@bp.errorhandler(PredictorError)
def _error(exc: PredictorError) -> Response:
    return json_response(v2_error(exc), exc.status)


@bp.get("/v2")
def server_metadata() -> Response:
    return json_response(
        {"name": SERVER_NAME, "version": _package_version, "extensions": EXTENSIONS}
    )


@bp.get("/v2/health/live")
def live() -> Response:
    return json_response({"live": True})


@bp.get("/v2/health/ready")
def ready() -> Response:
    st = state(current_app)
    is_ready = not st.draining and st.registry.ready()
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


@bp.get("/v2/models/<name>")
def model_metadata(name: str) -> Response:
    st = state(current_app)
    return json_response(_metadata(st, _serving_manifest(st, name), st.store.versions(name)))


@bp.get("/v2/models/<name>/versions/<version>")
def model_version_metadata(name: str, version: str) -> Response:
    st = state(current_app)
    return json_response(_metadata(st, st.store.manifest(name, version), [version]))


@bp.get("/v2/models/<name>/ready")
def model_ready(name: str) -> Response:
    return _model_ready(name, None)


@bp.get("/v2/models/<name>/versions/<version>/ready")
def model_version_ready(name: str, version: str) -> Response:
    return _model_ready(name, version)


@bp.post("/v2/models/<name>/infer")
def infer(name: str) -> Response:
    return _infer(name, None)


@bp.post("/v2/models/<name>/versions/<version>/infer")
def infer_version(name: str, version: str) -> Response:
    return _infer(name, version)


# --- helpers ---------------------------------------------------------------


def _serving_manifest(st: ServiceState, name: str) -> Manifest:
    """The manifest of the version this worker serves, else the store's current one."""
    try:
        return st.registry.get(name).manifest
    except PredictorError as exc:
        if exc.status == 404:
            raise
    current = st.store.current(name)
    if current is None:
        raise PredictorError(503, "model_not_ready", f"model {name!r} has no current version")
    return st.store.manifest(name, current)


def _metadata(st: ServiceState, m: Manifest, versions: list[str]) -> dict[str, Any]:
    outputs: list[dict[str, Any]] = [
        {"name": PREDICT, "datatype": _predict_datatype(m), "shape": [-1]}
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


def _predict_datatype(m: Manifest) -> str:
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


def _model_ready(name: str, version: str | None) -> Response:
    st = state(current_app)
    try:
        model = st.registry.get(name, version)
    except PredictorError as exc:
        if exc.status == 404:
            raise
        return json_response({"name": name, "ready": False, "reason": exc.message}, 503)
    return json_response({"name": model.name, "version": model.version, "ready": True})


def _read_body(st: ServiceState) -> bytes:
    """The raw body within the size limit, decompressed when the client compressed it."""
    limit = st.settings.MAX_BODY_BYTES
    if request.content_length is not None and request.content_length > limit:
        raise body_too_large(request.content_length, limit)
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise body_too_large(None, limit) from None
    encoding = request.headers.get("Content-Encoding", "").lower()
    if encoding in ("gzip", "deflate"):
        # Bounded: a small compressed body must not expand past the limit.
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise bad_input("invalid_body", f"body is not valid {encoding}: {exc}") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise body_too_large(None, limit)
    elif encoding not in ("", "identity"):
        raise PredictorError(
            415, "unsupported_encoding", f"Content-Encoding {encoding} is not supported"
        )
    if not body:
        raise bad_input("invalid_json", "request body is empty: send a V2 inference request")
    return body


def _infer(name: str, version: str | None) -> Response:
    st = state(current_app)
    model = st.registry.get(name, version)
    body = _read_body(st)
    req = decode_request(body, request.headers.get(HEADER_LENGTH))
    wanted = _outputs_wanted(model, req.outputs)
    rows = tensors_to_rows(req.inputs, model.manifest.features, st.settings.MAX_ROWS)
    result = st.core.predict(model, rows, with_proba=PREDICT_PROBA in wanted)

    outputs, blobs = [], []
    for out in wanted.values():
        if out.name == PREDICT:
            datatype = _predict_datatype(model.manifest)
            array = np.asarray(result.raw, dtype=object if datatype == "BYTES" else None)
        elif result.proba is not None:
            datatype, array = "FP64", np.asarray(result.proba, dtype=np.float64)
        else:  # the runtime gave no probabilities after all
            raise bad_input("unknown_output", f"model {model.name!r} gives no predict_proba")
        binary = req.binary_output if out.binary is None else out.binary
        tensor, blob = encode_output(out.name, datatype, array, binary)
        outputs.append(tensor)
        if blob is not None:
            blobs.append(blob)

    answer: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if req.id is not None:
        answer["id"] = req.id
    answer["outputs"] = outputs
    headers = st.answer_headers(result)
    if not blobs:
        return json_response(answer, headers=headers)
    header = orjson.dumps(answer)
    headers[HEADER_LENGTH] = str(len(header))
    return Response(
        b"".join([header, *blobs]), headers=headers, mimetype="application/octet-stream"
    )


def _outputs_wanted(
    model: LoadedModel, requested: list[RequestedOutput]
) -> dict[str, RequestedOutput]:
    has_proba = model.is_classifier and model.runtime.has_proba
    available = [PREDICT, PREDICT_PROBA] if has_proba else [PREDICT]
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
