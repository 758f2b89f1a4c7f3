"""The in-process cache on its own: LRU order and expiry (on a clock the test moves, so
no sleep and no dependence on the machine's speed)."""

from __future__ import annotations

import pytest

import service.cache
from service.cache import LocalCache


class Clock:
    """Stands in for the ``time`` module inside service.cache: ``monotonic`` is ours."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_local_cache_evicts_least_recently_used_and_expires(monkeypatch: pytest.MonkeyPatch):
    clock = Clock()
    monkeypatch.setattr(service.cache, "time", clock)
    cache = LocalCache(max_entries=2, ttl_seconds=0.3)
    cache.set_many({"a": b"1", "b": b"2"})
    assert cache.get_many(["a"]) == [b"1"]  # a is now the most recent
    cache.set_many({"c": b"3"})
    assert cache.get_many(["a", "b", "c"]) == [b"1", None, b"3"]
    clock.now += 0.29
    assert cache.get_many(["a", "c"]) == [b"1", b"3"]  # not yet expired
    clock.now += 0.02
    assert cache.get_many(["a", "c"]) == [None, None]
