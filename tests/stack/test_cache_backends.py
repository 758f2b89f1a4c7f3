"""The Redis cache backends on their own against a real redis-server: the circuit breaker
and the near tier (tests/unit/test_local_cache.py: the in-process LRU)."""

from __future__ import annotations

import time

from service.cache import LocalCache, RedisCache
from tools.stack import RedisServer, free_port


def test_redis_breaker_skips_a_dead_server_then_reconnects(tmp_path):
    port = free_port()
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", 60, timeout_ms=20, retry_seconds=0.3)
    start = time.perf_counter()
    assert cache.get_many(["k"]) == [None]  # nothing listens: fails fast and opens
    assert not cache.available
    for _ in range(100):  # while open, Redis is not even tried
        assert cache.get_many(["k"]) == [None]
    assert time.perf_counter() - start < 0.1

    redis = RedisServer(tmp_path, port=port).start()
    try:
        time.sleep(0.35)
        assert cache.available
        cache.set_many({"k": b"v"})
        assert cache.get_many(["k", "missing"]) == [b"v", None]
        ttl = int(redis.command("TTL", "k").decode().strip(":\r\n"))
        assert 0 < ttl <= 60  # entries expire after CACHE_TTL_SECONDS
        redis.pause(1.0)  # a slow Redis costs one timeout, then nothing
        start = time.perf_counter()
        assert cache.get_many(["k"]) == [None]
        assert cache.get_many(["k"]) == [None]
        assert time.perf_counter() - start < 0.1
    finally:
        redis.stop()


def test_near_tier_answers_without_redis_and_fills_from_it(tmp_path):
    from service.cache import TieredCache

    redis = RedisServer(tmp_path).start()
    try:
        url = redis.url
        writer = TieredCache(LocalCache(10, 60), RedisCache(url, 60, 20, 0.3))
        reader = TieredCache(LocalCache(10, 60), RedisCache(url, 60, 20, 0.3))
        writer.set_many({"a": b"1"})
        assert reader.get_many(["a", "b"]) == [b"1", None]  # from Redis, now near too
        redis.stop()
        assert reader.get_many(["a"]) == [b"1"]  # no round trip needed
        assert writer.get_many(["a"]) == [b"1"]
    finally:
        redis.stop()
