"""Gunicorn workers for Predictor: gunicorn's own, plus test-only stop points.

Selected in ``service/gunicorn_conf.py`` (``SyncWorker``, or ``ThreadWorker`` when
``PREDICTOR_THREADS`` > 1).

Stop points (tests and ``make chaos`` only). With ``PREDICTOR_TEST_STOP_FILE`` set in a
worker's environment at start, the worker reads that file at each point of a request's
life; when it names the point, one worker claims it (renames it to ``<file>.<pid>``) and
stops itself with SIGSTOP, so a test can SIGKILL it exactly there. Points, in order:

    read      the request's headers are parsed, the app has not read its body
    predict   the app has read the whole body and has not answered yet
    write     gunicorn has the status and headers and is about to send the body
    written   the whole response has been handed to the kernel

Nothing in a request can turn this on: it needs the environment at start and write
access to the file. Without the variable no point costs more than one ``if``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker
from gunicorn.workers.sync import SyncWorker as GunicornSyncWorker

STOP_FILE_ENV = "PREDICTOR_TEST_STOP_FILE"
STOP_POINTS = ("read", "predict", "write", "written")


class StopPoints:
    """Where a worker stops itself, as named in one file (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    # --- the driver's side (a test, tools/chaos.py) ---------------------------------
    def arm(self, point: str) -> None:
        """The next worker to reach ``point`` stops there."""
        if point not in STOP_POINTS:
            raise ValueError(f"unknown stop point {point!r}; expected one of {STOP_POINTS}")
        self.clear()
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(point)
        os.replace(tmp, self.path)  # a worker never reads half a name

    def clear(self) -> None:
        """Disarm, and forget earlier claims."""
        self.path.unlink(missing_ok=True)
        for claim in self.path.parent.glob(self.path.name + ".*"):
            claim.unlink(missing_ok=True)

    def stopped_worker(self) -> int | None:
        """The PID of the worker that claimed the point, once it is stopped (state T)."""
        for claim in self.path.parent.glob(self.path.name + ".*"):
            suffix = claim.name.rsplit(".", 1)[1]
            if suffix.isdigit() and _process_state(int(suffix)) == "T":
                return int(suffix)
        return None

    # --- the worker's side --------------------------------------------------------
    def reached(self, point: str) -> None:
        try:
            wanted = self.path.read_text().strip()
        except OSError:
            return
        if wanted != point:
            return
        try:  # the rename is the claim: of all workers reading the file, one stops
            os.rename(self.path, f"{self.path}.{os.getpid()}")
        except OSError:
            return
        os.kill(os.getpid(), signal.SIGSTOP)

    def wrap(self, app: Callable) -> Callable:
        """The WSGI app with the ``read`` and ``predict`` points around its body reads."""

        def stopping_app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
            self.reached("read")
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length:
                environ["wsgi.input"] = _BodyWatch(
                    environ["wsgi.input"], length, lambda: self.reached("predict")
                )
            return app(environ, start_response)

        return stopping_app


def _process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


class _BodyWatch:
    """wsgi.input that calls ``done`` once the whole body has been read."""

    def __init__(self, stream: Any, length: int, done: Callable[[], None]) -> None:
        self._stream, self._left, self._done = stream, length, done

    def _count(self, data: bytes) -> bytes:
        if self._left > 0:
            self._left -= len(data)
            if self._left <= 0:
                self._done()
        return data

    def read(self, size: int | None = None) -> bytes:
        return self._count(self._stream.read(size) if size is not None else self._stream.read())

    def readline(self, size: int | None = None) -> bytes:
        return self._count(self._stream.readline(size))

    def __iter__(self):  # noqa: ANN204 - iterator protocol
        return iter(self.readline, b"")


def _stop_points() -> StopPoints | None:
    path = os.environ.get(STOP_FILE_ENV)
    return StopPoints(path) if path else None


# Set in each worker process at start (never in the master, never on import).
_stops: StopPoints | None = None


class Response(gunicorn_wsgi.Response):
    """gunicorn's response, with the ``write`` and ``written`` stop points."""

    def _emit_body(self, data: bytes) -> None:
        if _stops is not None:
            _stops.reached("write")
        super()._emit_body(data)

    def close(self) -> None:
        super().close()
        if _stops is not None:
            _stops.reached("written")


def _install() -> None:
    """In this worker process: stop points from the environment, and our Response.

    gunicorn's workers build each response with ``gunicorn.http.wsgi.create``, whose
    default class is that module's ``Response``: naming ours there (in the worker
    process only) is how a worker picks its response class without copying gunicorn's
    request loop. HTTP/2 passes its own class and is left alone.
    """
    global _stops
    _stops = _stop_points()
    gunicorn_wsgi.Response = Response


class _PredictorWorker:
    """What both worker classes add to gunicorn's."""

    def init_process(self) -> None:
        _install()
        super().init_process()  # type: ignore[misc] - runs the worker loop, never returns

    def load_wsgi(self) -> None:
        super().load_wsgi()  # type: ignore[misc]
        if _stops is not None:
            self.wsgi = _stops.wrap(self.wsgi)


class SyncWorker(_PredictorWorker, GunicornSyncWorker):
    """gunicorn's sync worker with Predictor's response."""


class ThreadWorker(_PredictorWorker, GunicornThreadWorker):
    """gunicorn's gthread worker with Predictor's response."""
