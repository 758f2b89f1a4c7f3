"""The watcher: each worker notices a new ``current`` and asks the registry to swap.

It wakes on a Redis notice (service/notify.py) or after one poll interval,
whichever comes first, then calls ``refresh``; polling alone is the fallback
(and the only path without Redis), so a lost notice delays a swap by at most
``POLL_INTERVAL_SECONDS``. Loading happens on this thread, never on a request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("predictor.registry")


class ModelWatcher:
    """Calls ``refresh`` on a poll interval and on every Redis promotion notice."""

    def __init__(
        self,
        refresh: Callable[[], None],
        poll_seconds: float,
        redis_url: str | None,
        redis_password: str | None = None,
    ) -> None:
        self._refresh = refresh
        self._poll_seconds = poll_seconds
        self._redis_url = redis_url
        self._redis_password = redis_password
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    def start(self) -> None:
        """Start the threads in this process (after fork, in each worker); idempotent."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._thread.start()
        if self._redis_url:
            from ..notify import listen

            threading.Thread(
                target=listen,
                args=(self._redis_url, self._wake.set, self._stop, self._redis_password),
                name="model-notices",
                daemon=True,
            ).start()

    def wake(self) -> None:
        """Refresh now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._refresh()
            except Exception:  # the watcher must outlive a bad store read
                log.exception("model store refresh failed")
