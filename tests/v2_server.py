"""One real gunicorn (2 workers, demo models, admin token) shared by the V2, OpenAPI
and web page tests of this test process: starting it (preloading three models) is
paid once. Stopped by PID when the test process exits."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from tools.stack import Gunicorn

ADMIN_TOKEN = "v2-test-admin-token-0123456789abcdef"
_server: Gunicorn | None = None


def shared_server(store_template: Path) -> Gunicorn:
    """The running server on a copy of ``store_template``; started on first use."""
    global _server
    if _server is None or not _server.alive():
        run_dir = Path(tempfile.mkdtemp(prefix="predictor-v2-run-"))
        shutil.copytree(store_template, run_dir / "models")
        server = Gunicorn(
            run_dir,
            run_dir / "models",
            workers=2,
            env={"PREDICTOR_ADMIN_TOKEN": ADMIN_TOKEN, "PREDICTOR_LOG_LEVEL": "warning"},
            name="gunicorn-v2",
        )
        server.start(timeout=90)
        atexit.register(_stop, server, run_dir)
        _server = server
    return _server


def _stop(server: Gunicorn, run_dir: Path) -> None:
    server.stop()
    shutil.rmtree(run_dir, ignore_errors=True)
