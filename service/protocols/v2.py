"""Open Inference Protocol (KServe V2) REST: health, metadata, infer and statistics.

Requests decode into validated rows (protocols/v2_tensors.py) and go through the
data plane like every other route; errors leave as the protocol's
``{"error": "..."}`` (service/http.py shapes every ``/v2`` error, unknown routes
included). Outputs are named as MLServer's scikit-learn runtime names them:
``predict`` is the estimator's raw ``predict()`` output (class values for
classifiers, e.g. INT64 0/1/2 for iris, whose names the model metadata lists under
``parameters.labels``), and ``predict_proba`` the class probabilities. Without
``outputs`` in the request only ``predict`` is returned, as MLServer does.
``explanation`` (protocols/v2_explain.py) adds per-feature contributions.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.wrappers import Request

from .. import auth
from ..dataplane import DataPlane, ModelReadiness
from ..errors import bad_input
from ..explain.plane import explanations
from ..http import Answer, json_response, prediction_headers, read_body, respond
from ..manifest import Manifest
from ..state import plane, state
from ..statistics import Duration, ModelStatistics
from . import schemas, v2_plane
from .openapi import BODY_ERRORS, INFER_HEADER, JSON, operation
from .v2_tensors import decode_request, encode_output

bp = Blueprint("v2", __name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
NO_CURRENT = {503: "The model has no current version."}
READY = {
    "ok": schemas.ModelReady,
    "other": {503: (schemas.ModelReady, "Not ready (not loaded, or draining); reason says why.")},
}
INFER = {
    "ok": {
        JSON: {"schema": {"$ref": "#/components/schemas/InferResponse"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
    "body": schemas.InferRequest,
    "errors": {
        **BODY_ERRORS,
        501: "The `explanation` output was asked of a model with no exact explainer; "
        "the message says why.",
    },
    "parameters": (INFER_HEADER,),
    "description": "With binary outputs the body is JSON + raw bytes and the "
    "Inference-Header-Content-Length header gives the JSON length. The optional output "
    "`explanation` is a BYTES tensor [N]: element i is row i's explanation as a JSON "
    "object (schema V2Explanation; docs/explain.md).",
    "models": (schemas.InferResponse, schemas.V2Explanation),
}


@bp.get("/v2")
@auth.public
@operation("Server metadata", "v2", ok=schemas.ServerMetadata)
def server_metadata() -> Response:
    meta = plane().server_metadata()
    return json_response(
        {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}
    )


@bp.get("/v2/health/live")
@auth.public
@operation("Server live", "v2", ok=schemas.ServerLive)
def live() -> Response:
    is_live = plane().live()
    return json_response({"live": is_live}, 200 if is_live else 503)


@bp.get("/v2/health/ready")
@auth.public
@operation(
    "Server ready",
    "v2",
    ok=schemas.ServerReady,
    other={503: (schemas.ServerReady, "No model loaded, or draining.")},
)
def ready() -> Response:
    is_ready = plane().ready().ready
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


@bp.get("/v2/models/<name>")
@auth.public
@operation("Model metadata", "v2", ok=schemas.ModelMetadata, errors=NO_CURRENT)
def model_metadata(name: str) -> Response:
    dp = plane()
    return json_response(v2_plane.model_metadata(dp.manifest(name), dp.versions(name)))


@bp.get("/v2/models/<name>/versions/<version>")
@auth.api_key  # version-pinned: needs the key whenever keys are configured
@operation("Model version metadata", "v2", ok=schemas.ModelMetadata)
def model_version_metadata(name: str, version: str) -> Response:
    return json_response(v2_plane.model_metadata(plane().manifest(name, version), [version]))


@bp.get("/v2/models/<name>/ready")
@auth.public
@operation("Model ready", "v2", **READY)
def model_ready(name: str) -> Response:
    return _ready_answer(plane().model_ready(name))


@bp.get("/v2/models/<name>/versions/<version>/ready")
@auth.api_key  # version-pinned: needs the key whenever keys are configured
@operation("Model version ready", "v2", **READY)
def model_version_ready(name: str, version: str) -> Response:
    return _ready_answer(plane().model_ready(name, version))


@bp.get("/v2/models/<name>/config")
@auth.public
@operation("Model configuration", "v2", ok=schemas.ModelConfig, errors=NO_CURRENT)
def model_config(name: str) -> Response:
    dp = plane()
    return json_response(_config(dp, dp.manifest(name), dp.versions(name)))


@bp.get("/v2/models/<name>/versions/<version>/config")
@auth.api_key  # version-pinned: needs the key whenever keys are configured
@operation("Model version configuration", "v2", ok=schemas.ModelConfig)
def model_version_config(name: str, version: str) -> Response:
    dp = plane()
    return json_response(_config(dp, dp.manifest(name, version), [version]))


@bp.get("/v2/models/stats")
@auth.public
@operation("Statistics of every model", "v2", ok=schemas.Statistics)
def all_statistics() -> Response:
    return _statistics_answer(plane().statistics())


@bp.get("/v2/models/<name>/stats")
@auth.public
@operation("Model statistics", "v2", ok=schemas.Statistics)
def model_statistics(name: str) -> Response:
    return _statistics_answer(plane().statistics(name))


@bp.get("/v2/models/<name>/versions/<version>/stats")
@auth.api_key  # version-pinned: needs the key whenever keys are configured
@operation("Model version statistics", "v2", ok=schemas.Statistics)
def model_version_statistics(name: str, version: str) -> Response:
    return _statistics_answer(plane().statistics(name, version))


@bp.post("/v2/models/<name>/infer")
@auth.api_key
@operation("Infer (V2)", "v2", **INFER)
def infer(name: str) -> Response:
    return respond(answer_infer(current_app, None, name, None))


@bp.post("/v2/models/<name>/versions/<version>/infer")
@auth.api_key
@operation("Infer with a version (V2)", "v2", **INFER)
def infer_version(name: str, version: str) -> Response:
    return respond(answer_infer(current_app, None, name, version))


# --- encoding ----------------------------------------------------------------


def _ready_answer(readiness: ModelReadiness) -> Response:
    body: dict[str, Any] = {"name": readiness.name}
    if readiness.version is not None:
        body["version"] = readiness.version
    body["ready"] = readiness.ready
    if not readiness.ready:
        body["reason"] = readiness.reason
    return json_response(body, 200 if readiness.ready else 503)


def _duration(d: Duration) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}


def _statistics_answer(stats: list[ModelStatistics]) -> Response:
    """The statistics extension's body (Triton's shape; queue and compute_input/output are
    not separate steps here, so they stay zero)."""
    zero = {"count": 0, "ns": 0}
    return json_response(
        {
            "model_stats": [
                {
                    "name": s.name,
                    "version": s.version,
                    "last_inference": s.last_inference,
                    "inference_count": s.inference_count,
                    "execution_count": s.execution_count,
                    "inference_stats": {
                        "success": _duration(s.success),
                        "fail": _duration(s.fail),
                        "queue": zero,
                        "compute_input": zero,
                        "compute_infer": _duration(s.compute_infer),
                        "compute_output": zero,
                    },
                    "batch_stats": [],
                }
                for s in stats
            ]
        }
    )


def _config(dp: DataPlane, m: Manifest, versions: list[str]) -> dict[str, Any]:
    """A model configuration in Triton's vocabulary (what ``get_model_config`` reads)."""
    meta = v2_plane.model_metadata(m, versions)

    def tensors(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"name": t["name"], "data_type": _TRITON_TYPE[t["datatype"]], "dims": t["shape"]}
            for t in items
        ]

    return {
        "name": m.name,
        "versions": versions,
        "platform": meta["platform"],
        "backend": "predictor",
        "max_batch_size": dp.settings.MAX_ROWS,
        "input": tensors(meta["inputs"]),
        "output": tensors(meta["outputs"]),
        "parameters": {
            k: {"string_value": orjson.dumps(v).decode()} for k, v in meta["parameters"].items()
        },
    }


# Triton model-config data types; BYTES is TYPE_STRING there.
_TRITON_TYPE = {
    "BOOL": "TYPE_BOOL",
    "INT64": "TYPE_INT64",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
}


def answer_infer(app: Flask, req: Request | None, name: str, version: str | None) -> Answer:
    """V2 infer's answer (also what the lean dispatch calls, with its own request)."""
    dp = state(app)
    model = dp.model(name, version)
    body = read_body(dp.settings.MAX_BODY_BYTES, req)
    if not body:
        raise bad_input("invalid_json", "request body is empty: send a V2 inference request")
    headers_in = (request if req is None else req).headers
    req_v2 = decode_request(body, headers_in.get(HEADER_LENGTH))
    result = v2_plane.infer(dp, explanations(app), model, req_v2.inputs, req_v2.outputs)

    outputs, blobs = [], []
    for out in result.outputs:
        binary = req_v2.binary_output if out.requested.binary is None else out.requested.binary
        tensor, blob = encode_output(out.name, out.datatype, out.array, binary)
        outputs.append(tensor)
        if blob is not None:
            blobs.append(blob)

    answer: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if req_v2.id is not None:
        answer["id"] = req_v2.id
    answer["outputs"] = outputs
    headers = prediction_headers(dp, result.prediction)
    if not blobs:
        return Answer(orjson.dumps(answer), headers)
    header = orjson.dumps(answer)
    headers[HEADER_LENGTH] = str(len(header))
    return Answer(b"".join([header, *blobs]), headers, mimetype="application/octet-stream")
