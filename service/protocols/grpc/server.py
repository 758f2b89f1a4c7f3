"""One gRPC server process: the Open Inference Protocol on ``PREDICTOR_GRPC_BIND``.

Run by the gunicorn master (service/protocols/grpc/supervisor.py) as
``python -m service.protocols.grpc.server``, a fresh interpreter: grpcio does not
survive ``fork()`` with live channels or servers, so the server is created in the
process that serves it. It builds the same app state as an HTTP worker (store,
registry with its watcher, cache, metrics into the shared multiprocess directory)
and on SIGTERM drains as gunicorn does: not ready at once, still serving for
``DRAIN_SECONDS``, then in-flight calls get ``GRACEFUL_TIMEOUT`` to finish.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

from ...app import create_app
from ...auth import ApiKeys
from ...settings import Settings
from ...state import state
from . import inference_pb2_grpc as pb_grpc
from .servicer import InferenceServicer

log = logging.getLogger("predictor.grpc")


def build_server(settings: Settings) -> tuple[grpc.Server, InferenceServicer, int]:
    """A started-ready (not yet started) server bound to GRPC_BIND, and its bound port."""
    app = create_app(settings)
    st = state(app)
    servicer = InferenceServicer(st, ApiKeys.parse(settings.API_KEYS, settings.API_KEYS_FILE))
    # Bodies above the HTTP limit are refused here too (RESOURCE_EXHAUSTED from grpcio).
    limit = settings.MAX_BODY_BYTES
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.GRPC_THREADS),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", max(limit, 4 * 1024 * 1024)),
            # Several of our processes share the port when GRPC_WORKERS > 1; otherwise a
            # second server on the same port must fail to start, not split the traffic.
            ("grpc.so_reuseport", int(settings.GRPC_WORKERS > 1)),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(settings.GRPC_BIND)
    if port == 0:
        raise OSError(f"cannot listen on {settings.GRPC_BIND} for gRPC")
    return server, servicer, port


def main() -> int:
    settings = Settings()
    logging.basicConfig(
        level=settings.LOG_LEVEL.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    try:
        server, servicer, port = build_server(settings)
    except OSError as exc:
        log.error("gRPC server not started: %s", exc)
        return 3
    st = servicer.st
    st.registry.start_watcher()
    server.start()
    log.info("gRPC Open Inference Protocol on %s (pid %d)", settings.GRPC_BIND, os.getpid())

    stopping = threading.Event()

    def drain(signum: int, _frame: object) -> None:
        if stopping.is_set():
            return
        stopping.set()
        st.begin_drain()  # ServerReady and ModelReady answer false from now on

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    stopping.wait()
    log.info(
        "gRPC: draining for %.1fs, then %ds for in-flight calls",
        settings.DRAIN_SECONDS,
        settings.GRACEFUL_TIMEOUT,
    )
    time.sleep(settings.DRAIN_SECONDS)
    server.stop(grace=settings.GRACEFUL_TIMEOUT).wait()
    st.registry.stop_watcher()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # onnxruntime's static destructors may abort at interpreter teardown; nothing is left.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
