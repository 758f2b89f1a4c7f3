"""Gunicorn workers for Predictor: gunicorn's own, sending each response all or nothing.

Selected in ``service/gunicorn_conf.py`` (``SyncWorker``, or ``ThreadWorker`` when
``PREDICTOR_THREADS`` > 1).

Stop points (tests and ``make chaos`` only). With ``PREDICTOR_TEST_STOP_FILE`` set in a
worker's environment at start, the worker reads that file at each point of a request's
life; when it names the point, one worker claims it (renames it to ``<file>.<pid>``) and
stops itself with SIGSTOP, so a test can SIGKILL it exactly there. Points, in order:

    read       the request's headers are parsed, the app has not read its body
    predict    the app has read the whole body and has not answered yet
    write      gunicorn has the status and headers and is about to send the body
    mid-write  the headers and half the body are in the kernel, the rest not (as when a
               response is larger than the socket buffer)
    written    the whole response has been handed to the kernel

Nothing in a request can turn this on: it needs the environment at start and write
access to the file. Without the variable no point costs more than one ``if``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker
from gunicorn.workers.sync import SyncWorker as GunicornSyncWorker

STOP_FILE_ENV = "PREDICTOR_TEST_STOP_FILE"
STOP_POINTS = ("read", "predict", "write", "mid-write", "written")


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
    def _wanted(self) -> str | None:
        try:
            return self.path.read_text().strip()
        except OSError:
            return None

    def first_part(self, size: int, head: int) -> int:
        """How much of a ``size``-byte response (``head`` bytes of status and headers)
        goes in the first write: the headers and half the body when ``mid-write`` is
        armed, else all of it."""
        return head + (size - head) // 2 if self._wanted() == "mid-write" else size

    def reached(self, point: str) -> None:
        if self._wanted() != point:
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


# Held and sent in one write up to this size (the body is in memory already: Flask
# answers with one bytes object); longer ones stream as gunicorn streams them.
HOLD_LIMIT = 4 << 20


class Response(gunicorn_wsgi.Response):
    """gunicorn's response, sent all or nothing: status line, headers and body in one write.

    gunicorn writes the headers, then the body. A worker killed between the two leaves
    nginx a status and headers it has already passed on to the client, and a body that
    never comes: a 200 that is not an answer. Here a response of known length is held
    until its body is complete and handed to the kernel in one ``send``. A worker that
    dies before it leaves nothing: nginx sees a connection error and retries on another
    upstream (``proxy_next_upstream error``). Once the kernel has it, it is delivered
    whole even if the worker dies.

    Not all or nothing, and so tracked for the master (``cut_short``): a response the
    kernel does not take in one go (larger than the free socket buffer; the rest follows
    with ``sendall``), and one with no length or longer than HOLD_LIMIT (streamed).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: list[bytes] | None = None

    def _holds(self) -> bool:
        return (
            self.response_length is not None
            and self.response_length <= HOLD_LIMIT
            and not self.chunked
            and not self._omits_body
            and not self.upgrade
        )

    def _header_bytes(self) -> bytes:
        # The bytes gunicorn's send_headers writes (tests/stack/test_atomic_response.py
        # compares them), kept instead of written.
        lines = self.default_headers()
        lines.extend(["%s: %s\r\n" % (k, v) for k, v in self.headers])  # noqa: UP031 - as gunicorn
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def send_headers(self) -> None:
        if self.headers_sent or self._held is not None:
            return
        if self._holds():
            # headers_sent stays False: if the app fails before its body is complete,
            # gunicorn can still answer a clean 500 on this connection.
            self._held = [self._header_bytes()]
            return
        if not self._omits_body:  # streamed from here on: the client can be cut off
            SENDING.begin(self.response_length, 0)
        super().send_headers()

    def _emit_body(self, data: bytes) -> None:
        if _stops is not None:
            _stops.reached("write")
        if self._held is None:
            super()._emit_body(data)
            return
        self._held.append(data)
        if self.sent >= self.response_length:
            self._send_held()

    def can_sendfile(self) -> bool:
        # sendfile writes straight to the socket, past the held headers.
        return not self._holds() and super().can_sendfile()

    def close(self) -> None:
        if not self.headers_sent:  # an app that wrote nothing (e.g. an empty OPTIONS
            self.send_headers()  # answer, body []) has its headers held only now
        if self._held is not None:  # a body shorter than its Content-Length, or none
            self._send_held()
        super().close()
        SENDING.end()
        if _stops is not None:
            _stops.reached("written")

    def _send_held(self) -> None:
        held, self._held = self._held or [b""], None
        send_at_once(self.sock, b"".join(held), head=len(held[0]))
        self.headers_sent = True


def send_at_once(sock: Any, data: bytes, head: int = 0) -> None:
    """Hand ``data`` to the kernel in one ``send`` when it fits the socket buffer (nearly
    always: a fresh loopback socket takes ~4 MB); the rest, if any, with ``sendall``,
    marked for the master meanwhile (a death then cuts the response short)."""
    sent = 0
    if not isinstance(sock, ssl.SSLSocket):  # TLS sockets take no flags
        first = data if _stops is None else data[: _stops.first_part(len(data), head)]
        # On every response: a plain try, not a contextlib.suppress object.
        try:  # noqa: SIM105
            sent = sock.send(first, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass
    if sent == len(data):
        return
    SENDING.begin(len(data), sent)
    try:
        if _stops is not None:
            _stops.reached("mid-write")
        sock.sendall(memoryview(data)[sent:])
    finally:
        SENDING.end()


class Sending:
    """Which of this worker's threads are part-way through sending a response: one small
    file each (``sending-<pid>-<thread>``: total and sent bytes), so the master can tell,
    when a worker dies, that it cut a client's response short. Only responses that are
    not all or nothing are marked, so the usual request costs no system call here."""

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        self._marked: set[int] = set()

    @property
    def directory(self) -> Path:
        # Read when used: the gunicorn config sets PROMETHEUS_MULTIPROC_DIR (one per
        # gunicorn instance) after this module may have been imported.
        if self._directory is not None:
            return self._directory
        return Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.gettempdir())

    def _path(self, pid: int, thread: int) -> Path:
        return self.directory / f"sending-{pid}-{thread}"

    def begin(self, total: int | None, sent: int) -> None:
        thread = threading.get_ident()
        self._path(os.getpid(), thread).write_text(f"{total or -1} {sent}\n")
        self._marked.add(thread)

    def end(self) -> None:
        if not self._marked:  # the usual case: nothing marked, nothing to do
            return
        thread = threading.get_ident()
        if thread in self._marked:
            self._marked.discard(thread)
            self._path(os.getpid(), thread).unlink(missing_ok=True)

    def cut_short(self, pid: int) -> list[tuple[int | None, int]]:
        """In the master, for a worker that exited: (total or None, sent) of each response
        it was part-way through; the marks are removed."""
        found = []
        for path in self.directory.glob(f"sending-{pid}-*"):
            with contextlib.suppress(OSError, ValueError):
                total, sent = (int(x) for x in path.read_text().split())
                found.append((None if total < 0 else total, sent))
            path.unlink(missing_ok=True)
        return found


SENDING = Sending()


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

    def handle_request(self, *args: Any) -> Any:
        try:
            return super().handle_request(*args)  # type: ignore[misc]
        finally:
            SENDING.end()  # a streamed response the app broke off is not in flight any more

    def init_process(self) -> None:
        _install()
        super().init_process()  # type: ignore[misc] - runs the worker loop, never returns

    def load_wsgi(self) -> None:
        super().load_wsgi()  # type: ignore[misc]
        if _stops is not None:
            self.wsgi = _stops.wrap(self.wsgi)


class SyncWorker(_PredictorWorker, GunicornSyncWorker):
    """gunicorn's sync worker, each response sent all or nothing."""


class ThreadWorker(_PredictorWorker, GunicornThreadWorker):
    """gunicorn's gthread worker, each response sent all or nothing."""
