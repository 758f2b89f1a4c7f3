"""Gunicorn configuration, read from the same PREDICTOR_* settings as the app.

Run: ``gunicorn -c python:service.gunicorn_conf service.wsgi:app``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time

from service.settings import SecretError, Settings

_settings = Settings()
try:  # fail closed with one line, not a traceback, before any worker starts
    _settings.check_secrets()
except SecretError as _exc:
    sys.stderr.write(f"predictor: cannot start: {_exc}\n")
    sys.exit(1)

# prometheus-client must see its multiprocess directory before it is imported, and it must
# start empty (old worker files would skew counts). This module runs once, in the master,
# before the app is preloaded, so this is the place (gunicorn's on_starting runs too late).
os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR",
    os.path.join(tempfile.gettempdir(), f"predictor-metrics-{os.getpid()}"),
)
shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
# Workers fail /readyz while this file exists (set by the master on SIGTERM, see below).
os.environ["PREDICTOR_DRAIN_FLAG"] = os.path.join(
    os.environ["PROMETHEUS_MULTIPROC_DIR"], "draining.flag"
)

bind = _settings.BIND
workers = _settings.worker_count()
threads = _settings.THREADS
# sync by default. gthread keeps nginx's upstream connections alive and measured fewer
# CPU µs per request in one `make bench` run (docs/benchmarks.md, "Levers"), but the
# chaos worker-kill row failed with it: a stopped or killed worker strands the kept-alive
# connections nginx holds to it, and nginx answered 502 around the kill. gthread when
# PREDICTOR_THREADS > 1. gunicorn's own classes, with Predictor's response (service/worker.py).
worker_class = "service.worker.ThreadWorker" if threads > 1 else "service.worker.SyncWorker"
# Load the models once in the master: workers share their pages copy-on-write.
preload_app = True
timeout = 30
graceful_timeout = _settings.GRACEFUL_TIMEOUT
keepalive = 5
max_requests = _settings.MAX_REQUESTS
max_requests_jitter = _settings.MAX_REQUESTS_JITTER
# gunicorn 25+ opens a control socket under $HOME; a container user may have none.
control_socket_disable = True
loglevel = _settings.LOG_LEVEL
accesslog = None
errorlog = "-"


# The gRPC server processes (protocols/grpc/supervisor.py), started once the master is ready.
_grpc = None


def when_ready(server) -> None:  # noqa: ANN001 - gunicorn hook signature
    """Drain before stopping: on SIGTERM readiness fails at once, the workers keep serving
    for DRAIN_SECONDS (what a Kubernetes preStop delay gives the endpoints to update),
    then gunicorn's own graceful stop lets in-flight requests finish. The gRPC servers
    start here and drain with the same steps."""
    global _grpc
    if _settings.GRPC_BIND:
        from service.protocols.grpc.supervisor import GrpcProcesses

        _grpc = GrpcProcesses(_settings.GRPC_WORKERS, server.log)
        _grpc.start()
    graceful_stop = server.handle_term

    def handle_term() -> None:
        flag = os.environ["PREDICTOR_DRAIN_FLAG"]
        open(flag, "w").close()
        if _grpc is not None:
            _grpc.terminate()
        server.log.info(
            "SIGTERM: draining, readiness fails; closing the listener in %.1fs",
            _settings.DRAIN_SECONDS,
        )
        deadline = time.monotonic() + _settings.DRAIN_SECONDS
        while time.monotonic() < deadline:
            server.reap_workers()  # keep supervising while we wait
            time.sleep(0.1)
        graceful_stop()

    server.handle_term = handle_term


def on_exit(server) -> None:  # noqa: ANN001
    """The master is leaving: the gRPC servers finish their calls and go with it."""
    if _grpc is not None:
        _grpc.stop(_settings.DRAIN_SECONDS + _settings.GRACEFUL_TIMEOUT + 5)


def post_fork(server, worker) -> None:  # noqa: ANN001
    """Each worker watches the store itself (threads do not survive fork)."""
    from service.state import state
    from service.wsgi import app

    registry = state(app).registry
    # A worker forked after a promotion (max_requests recycling) holds the master's preloaded
    # version: swap before the first request, not at the first poll.
    try:
        registry.refresh()
    except Exception:  # the watcher retries; a bad store read must not stop the worker
        server.log.exception("model store refresh at worker start failed")
    registry.start_watcher()


def child_exit(server, worker) -> None:  # noqa: ANN001
    from service.metrics import RESPONSES_CUT_SHORT, mark_worker_dead
    from service.worker import SENDING

    # A worker that died while sending a response larger than one write cut it short.
    for total, sent in SENDING.cut_short(worker.pid):
        RESPONSES_CUT_SHORT.inc()
        server.log.warning(
            "worker %s died while sending a response: %s of %s bytes handed to the kernel",
            worker.pid, sent, "an unknown number" if total is None else total,
        )  # fmt: skip
    mark_worker_dead(worker.pid)


def worker_exit(server, worker) -> None:  # noqa: ANN001
    """End a worker that served without running interpreter teardown.

    onnxruntime's static destructors hang or abort (SIGABRT) in a forked child; the
    worker has already finished its requests and its metrics live in mmap'd files, so
    nothing is lost by skipping the teardown. A worker that never booted exits normally
    so gunicorn still sees its boot-error status.
    """
    if not worker.booted:
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
