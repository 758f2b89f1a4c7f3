"""The in-process cache on its own: LRU order and expiry."""

from __future__ import annotations

import time

from service.cache import LocalCache


def test_local_cache_evicts_least_recently_used_and_expires():
    cache = LocalCache(max_entries=2, ttl_seconds=0.3)
    cache.set_many({"a": b"1", "b": b"2"})
    assert cache.get_many(["a"]) == [b"1"]  # a is now the most recent
    cache.set_many({"c": b"3"})
    assert cache.get_many(["a", "b", "c"]) == [b"1", None, b"3"]
    time.sleep(0.35)
    assert cache.get_many(["a", "c"]) == [None, None]
