"""The Redis cache backends on their own against a real redis-server: the circuit breaker
and the near tier (tests/unit/test_local_cache.py: the in-process LRU)."""

from __future__ import annotations

import service.cache
from service.cache import LocalCache, RedisCache
from tools.stack import RedisServer, free_port


class Clock:
    """Stands in for the ``time`` module inside service.cache: the breaker's clock is ours."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def count_round_trips(cache: RedisCache) -> list[str]:
    """Every MGET or pipeline the cache starts on its real client, in order."""
    calls: list[str] = []
    client = cache._client
    mget, pipeline = client.mget, client.pipeline

    def counted_mget(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append("mget")
        return mget(*args, **kwargs)

    def counted_pipeline(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append("pipeline")
        return pipeline(*args, **kwargs)

    client.mget, client.pipeline = counted_mget, counted_pipeline
    return calls


def test_redis_breaker_skips_a_dead_server_then_reconnects(tmp_path, monkeypatch):
    # Counted, not timed: while the breaker is open Redis is not even tried.
    clock = Clock()
    monkeypatch.setattr(service.cache, "time", clock)
    port = free_port()
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", 60, timeout_ms=20, retry_seconds=2.0)
    tries = count_round_trips(cache)
    assert cache.get_many(["k"]) == [None]  # nothing listens: fails and opens
    assert not cache.available and tries == ["mget"]
    for _ in range(100):
        assert cache.get_many(["k"]) == [None]
        cache.set_many({"k": b"v"})
    assert tries == ["mget"]

    redis = RedisServer(tmp_path, port=port).start()
    try:
        clock.now += 1.9
        assert not cache.available  # still inside the retry period
        clock.now += 0.1
        assert cache.available
        cache.set_many({"k": b"v"})
        assert cache.get_many(["k", "missing"]) == [b"v", None]
        ttl = int(redis.command("TTL", "k").decode().strip(":\r\n"))
        assert 0 < ttl <= 60  # entries expire after CACHE_TTL_SECONDS
        before = len(tries)
        redis.pause(1.0)  # a slow Redis costs one timeout, then nothing
        assert cache.get_many(["k"]) == [None]
        assert not cache.available
        for _ in range(10):
            assert cache.get_many(["k"]) == [None]
        assert len(tries) == before + 1, tries
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
