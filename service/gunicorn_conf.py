"""Gunicorn configuration, read from the same PREDICTOR_* settings as the app.

Run: ``gunicorn -c python:service.gunicorn_conf service.wsgi:app``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from service.settings import Settings

_settings = Settings()

# prometheus-client must see its multiprocess directory before it is imported, and it must
# start empty (old worker files would skew counts). This module runs once, in the master,
# before the app is preloaded, so this is the place (gunicorn's on_starting runs too late).
os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR",
    os.path.join(tempfile.gettempdir(), f"predictor-metrics-{os.getpid()}"),
)
shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

bind = _settings.BIND
workers = _settings.worker_count()
threads = _settings.THREADS
# Measured (docs/benchmarks.md): behind nginx, sync workers answer the most requests per
# core for a CPU-bound model; gthread is used when THREADS > 1 (keep-alive without nginx).
worker_class = "gthread" if threads > 1 else "sync"
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


def post_fork(server, worker) -> None:  # noqa: ANN001
    """Each worker watches the store itself (threads do not survive fork)."""
    from service.state import state
    from service.wsgi import app

    state(app).registry.start_watcher()


def child_exit(server, worker) -> None:  # noqa: ANN001
    from service.metrics import mark_worker_dead

    mark_worker_dead(worker.pid)
