"""Promotion notices over Redis pub/sub, so workers swap at once instead of at the next poll.

Polling the store stays the fallback (and the only path without Redis): a lost
notice delays a swap by at most ``POLL_INTERVAL_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("predictor.notify")

CHANNEL = "predictor:model-updates"


def announce(redis_url: str | None, name: str, version: str, password: str | None = None) -> bool:
    """Tell every subscribed worker that ``name`` changed; False when Redis is unreachable."""
    if not redis_url:
        return False
    import redis

    try:
        client = redis.Redis.from_url(
            redis_url, password=password, socket_connect_timeout=1, socket_timeout=1
        )
        client.publish(CHANNEL, f"{name}:{version}")
        client.close()
        return True
    except Exception as exc:  # the poll will still find it
        log.warning("could not announce %s version %s over Redis: %s", name, version, exc)
        return False


def listen(
    redis_url: str,
    on_notice: Callable[[], None],
    stop: threading.Event,
    password: str | None = None,
) -> None:
    """Call ``on_notice`` for every announcement until ``stop``; reconnects by itself."""
    import redis

    while not stop.is_set():
        try:
            client = redis.Redis.from_url(
                redis_url, password=password, socket_connect_timeout=1, socket_timeout=5
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(CHANNEL)
            while not stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is not None:
                    on_notice()
        except Exception as exc:
            log.debug("model update channel unavailable (%s); polling covers it", exc)
            stop.wait(2.0)
