"""The Open Inference Protocol's GRPCInferenceService over the service's data plane.

A thin transport, as REST V2 is: each RPC decodes its message, calls the same
data plane (service/dataplane.py: readiness, metadata, model lookup, predict)
that HTTP calls, and encodes the answer. Errors are gRPC status codes with the same
message REST V2 gives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from ... import metrics
from ...auth import ApiKeys
from ...dataplane import DataPlane
from ...errors import PredictorError
from ...explain.plane import Explanations
from .. import v2_plane
from . import inference_pb2 as pb
from . import inference_pb2_grpc as pb_grpc
from .tensors import decode_inputs, encode_output, requested_outputs

log = logging.getLogger("predictor.grpc")

# HTTP status of a PredictorError -> the gRPC status a client sees.
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def _server_metadata(st: DataPlane) -> pb.ServerMetadataResponse:
    meta = st.server_metadata()
    return pb.ServerMetadataResponse(
        # The statistics extension is served over REST only (no ModelStatistics RPC here).
        name=meta.name,
        version=meta.version,
        extensions=[e for e in meta.extensions if e != "statistics"],
    )


def api_key_from_metadata(metadata: Any) -> str | None:
    """The key a client sent as ``x-api-key`` or ``authorization: Bearer <key>``."""
    headers = {k.lower(): v for k, v in metadata or ()}
    if "x-api-key" in headers:
        return headers["x-api-key"]
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Answers the six RPCs of the protocol from one data plane."""

    def __init__(self, st: DataPlane, api_keys: ApiKeys | None) -> None:
        self.st = st
        self.api_keys = api_keys
        # This process's explainer cache (estimators load on the first explanation).
        self.explanations = Explanations(st.store, st.settings)

    # --- health and metadata (public, as on REST) ---------------------------
    def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:  # noqa: N802
        return _call("ServerLive", context, lambda: pb.ServerLiveResponse(live=True))

    def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:  # noqa: N802
        return _call("ServerReady", context, lambda: pb.ServerReadyResponse(ready=self._ready()))

    def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:  # noqa: N802
        def answer() -> pb.ModelReadyResponse:
            readiness = self.st.model_ready(request.name, request.version or None)  # 404s
            return pb.ModelReadyResponse(ready=readiness.ready)

        return _call("ModelReady", context, answer)

    def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return _call(
            "ServerMetadata",
            context,
            lambda: _server_metadata(self.st),
        )

    def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        def answer() -> pb.ModelMetadataResponse:
            st = self.st
            if request.version:
                manifest, versions = st.manifest(request.name, request.version), [request.version]
            else:
                manifest, versions = st.manifest(request.name), st.versions(request.name)
            meta = v2_plane.model_metadata(manifest, versions)
            response = pb.ModelMetadataResponse(
                name=meta["name"], versions=meta["versions"], platform=meta["platform"]
            )
            for kind in ("inputs", "outputs"):
                for t in meta[kind]:
                    getattr(response, kind).add(
                        name=t["name"], datatype=t["datatype"], shape=t["shape"]
                    )
            return response

        return _call("ModelMetadata", context, answer)

    # --- inference (API key when keys are configured) ------------------------
    def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        return _call("ModelInfer", context, lambda: self._infer(request, context))

    def _infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        self._check_key(context)
        st = self.st
        model = st.model(request.model_name, request.model_version or None)
        result = v2_plane.infer(
            st, self.explanations, model, decode_inputs(request), requested_outputs(request)
        )
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version)
        if request.id:
            response.id = request.id
        raw = bool(request.raw_input_contents)  # answer in the form the client sent
        for out in result.outputs:
            encode_output(response, out.name, out.datatype, out.array, raw)
        context.set_trailing_metadata((("x-cache", result.prediction.cache_status),))
        return response

    # --- internals -------------------------------------------------------------
    def _ready(self) -> bool:
        return self.st.ready().ready

    def _check_key(self, context: Any) -> None:
        if self.api_keys is None:
            return
        presented = api_key_from_metadata(context.invocation_metadata())
        if not presented:
            raise PredictorError(
                401,
                "unauthorized",
                "an API key is required: send metadata authorization: Bearer <key> "
                "or x-api-key: <key>",
            )
        if self.api_keys.identify(presented) is None:
            raise PredictorError(401, "unauthorized", "the API key is not valid")


def _call(method: str, context: Any, answer: Callable[[], Any]) -> Any:
    """Run one RPC: PredictorError -> its status code and message; count and time it."""
    start = time.perf_counter()
    code = grpc.StatusCode.OK
    try:
        return answer()
    except PredictorError as exc:
        code = STATUS_CODES.get(exc.status, grpc.StatusCode.INTERNAL)
        context.abort(code, exc.message)
    except Exception:
        code = grpc.StatusCode.INTERNAL
        log.exception("unhandled error in %s", method)
        context.abort(code, "internal error; see the service log")
    finally:
        metrics.GRPC_REQUESTS.labels(method, code.name).inc()
        metrics.GRPC_DURATION.labels(method, code.name).observe(time.perf_counter() - start)
