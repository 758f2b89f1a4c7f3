"""The gRPC server processes, supervised by the gunicorn master.

``predictor serve`` runs gunicorn; when ``PREDICTOR_GRPC_BIND`` is set (the default
``127.0.0.1:8001``) the master starts ``GRPC_WORKERS`` server processes next to its
HTTP workers, restarts one that dies, passes SIGTERM on so they drain with the HTTP
side, and marks their metrics dead when they exit. Each is ``exec``'d fresh (grpcio
and ``fork()`` do not mix), inheriting the master's environment, so it reads the
same settings and writes its metrics into the same multiprocess directory.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from typing import Any

log = logging.getLogger("predictor.grpc")

# A server that dies this soon after starting, this many times in a row, is not restarted:
# a port in use or a broken setting would otherwise spin forever.
FAST_FAILURE_SECONDS = 5.0
MAX_FAST_FAILURES = 5


class GrpcProcesses:
    """Starts, restarts and stops the gRPC server processes."""

    def __init__(self, count: int, logger: Any = None) -> None:
        self.count = count
        self.log = logger or log
        self._procs: list[subprocess.Popen | None] = [None] * count
        self._started: list[float] = [0.0] * count
        self._fast_failures = [0] * count
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            for i in range(self.count):
                self._spawn(i)
        self._thread = threading.Thread(target=self._watch, name="grpc-supervisor", daemon=True)
        self._thread.start()

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None and p.poll() is None]

    def terminate(self) -> None:
        """Begin a drain: every server stops answering ready and finishes its calls."""
        self._stopping.set()
        with self._lock:
            for proc in self._procs:
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float) -> None:
        """Terminate (if not yet) and wait up to ``timeout``; kill what is left."""
        self.terminate()
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log.warning("gRPC server %d did not stop in time: killing it", proc.pid)
                proc.kill()
                proc.wait()
            _mark_dead(proc.pid)

    def _spawn(self, i: int) -> None:
        proc = subprocess.Popen([sys.executable, "-m", "service.protocols.grpc.server"])
        self._procs[i] = proc
        self._started[i] = time.monotonic()
        self.log.info("gRPC server process %d started", proc.pid)

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                for i, proc in enumerate(self._procs):
                    if proc is None or proc.poll() is None or self._stopping.is_set():
                        continue
                    _mark_dead(proc.pid)
                    lived = time.monotonic() - self._started[i]
                    self._fast_failures[i] = (
                        self._fast_failures[i] + 1 if lived < FAST_FAILURE_SECONDS else 0
                    )
                    if self._fast_failures[i] >= MAX_FAST_FAILURES:
                        self.log.error(
                            "gRPC server exited %d times within %.0fs of starting "
                            "(last status %s): not restarting it; see its log above",
                            MAX_FAST_FAILURES,
                            FAST_FAILURE_SECONDS,
                            proc.returncode,
                        )
                        self._procs[i] = None
                        continue
                    self.log.warning(
                        "gRPC server %d exited with status %s: restarting it",
                        proc.pid,
                        proc.returncode,
                    )
                    self._spawn(i)


def _mark_dead(pid: int) -> None:
    from ...metrics import mark_worker_dead

    mark_worker_dead(pid)
