"""The prediction cache for real: nginx -> gunicorn (2 workers) -> redis-server."""

from __future__ import annotations

import shutil
import statistics
import time

import pytest
import requests

from service.store import ModelStore
from tests.helpers import IRIS_FEATURES, IRIS_ROW, resign, scrape, total
from tools.stack import Gunicorn, Nginx, RedisServer


@pytest.fixture
def stack(store_dir, tmp_path):
    run = tmp_path / "run"
    redis = RedisServer(run).start()
    # Short retry so the test sees reconnection quickly; the timeout is the production default.
    # The demo models are cheaper than a Redis round trip: share them through Redis anyway.
    env = {"PREDICTOR_REDIS_RETRY_SECONDS": "0.5", "PREDICTOR_CACHE_SHARED_MIN_US": "0"}
    gunicorn = Gunicorn(run, store_dir, redis_url=redis.url, env=env).start()
    nginx = Nginx(run, [gunicorn.address], values={"NGINX_RATE_LIMIT": "100000r/s"}).start()
    try:
        yield redis, gunicorn, nginx
    finally:
        nginx.stop()
        gunicorn.stop()
        redis.stop()


def predict(nginx: Nginx, rows: list, model: str = "iris") -> requests.Response:
    response = requests.post(
        f"{nginx.url}/v1/models/{model}:predict", json={"instances": rows}, timeout=5
    )
    assert response.status_code == 200, response.text
    return response


def test_second_identical_request_is_a_hit_and_skips_the_model(stack):
    _, gunicorn, nginx = stack
    row = [5.9, 3.0, 5.1, 1.8]
    first = predict(nginx, [row])
    before = scrape(gunicorn.url)
    second = predict(nginx, [row])
    after = scrape(gunicorn.url)
    assert first.headers["X-Cache"] == "miss" and second.headers["X-Cache"] == "hit"
    assert second.json()["predictions"] == first.json()["predictions"]
    hits = "predictor_cache_hits_total"
    assert total(after, hits, model="iris") - total(before, hits, model="iris") == 1
    calls = "predictor_inference_duration_seconds_count"
    assert total(after, calls, model="iris") == total(before, calls, model="iris")


def test_same_input_spelled_differently_hits_the_same_entry(stack):
    _, _, nginx = stack
    predict(nginx, [[6, 3, 5, 2]])
    assert predict(nginx, [[6.0, 3.0, 5.0, 2.0]]).headers["X-Cache"] == "hit"
    named = dict(zip(IRIS_FEATURES, [6.0, 3, 5.0, 2], strict=True))
    assert predict(nginx, [named]).headers["X-Cache"] == "hit"
    # The same row for another model is not that model's answer.
    assert predict(nginx, [[6, 3, 5, 2]], model="iris-rf").headers["X-Cache"] == "miss"


def test_half_cached_batch_predicts_only_the_misses(stack):
    _, gunicorn, nginx = stack
    cached = [[5.0, 3.4, 1.5, 0.2], [6.4, 3.2, 4.5, 1.5]]
    fresh = [[7.7, 2.6, 6.9, 2.3], [5.7, 2.8, 4.1, 1.3]]
    predict(nginx, cached)
    before = scrape(gunicorn.url)
    mixed = predict(nginx, [cached[0], fresh[0], cached[1], fresh[1]])
    after = scrape(gunicorn.url)
    assert mixed.headers["X-Cache"] == "partial"
    assert mixed.json()["predictions"] == ["setosa", "virginica", "versicolor", "versicolor"]
    delta = {n: total(after, n, model="iris") - total(before, n, model="iris")
             for n in ("predictor_cache_hits_total", "predictor_cache_misses_total")}  # fmt: skip
    assert delta == {"predictor_cache_hits_total": 2, "predictor_cache_misses_total": 2}
    # One model call for the two misses.
    calls = "predictor_inference_duration_seconds_count"
    assert total(after, calls, model="iris") - total(before, calls, model="iris") == 1


def test_redis_killed_mid_traffic_then_restarted(stack):
    redis, gunicorn, nginx = stack
    latencies: list[float] = []

    def burst(n: int, offset: float) -> None:
        for i in range(n):
            start = time.perf_counter()
            predict(nginx, [[5.0 + offset + i / 1000, 3.0, 1.5, 0.2]])
            latencies.append(time.perf_counter() - start)

    burst(50, 0)
    redis.kill()  # SIGKILL: connections drop mid-flight
    burst(150, 1)
    down = list(latencies[50:])
    errors = total(scrape(gunicorn.url), "predictor_cache_errors_total", backend="redis")
    assert errors > 0
    # Within this run: requests with Redis dead cost about what they cost with it up (the
    # breaker skips it), whatever the machine's speed; 2 s only catches a hang.
    up_median, down_median = statistics.median(latencies[:50]), statistics.median(down)
    p99 = statistics.quantiles(down, n=100)[98]
    print(f"Redis up: median {up_median * 1000:.1f} ms; down: median "
          f"{down_median * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")  # fmt: skip
    assert down_median <= 2 * up_median + 0.005, (up_median, down_median)
    assert p99 < 2.0, f"p99 with Redis down was {p99 * 1000:.0f} ms"

    redis.start()  # same port, empty
    deadline = time.monotonic() + 10
    stored = 0
    i = 0
    while time.monotonic() < deadline and not stored:
        i += 1
        predict(nginx, [[4.4, 2.9, 1.4, i / 1000]])  # stored once the breaker lets Redis in
        stored = int(redis.command("DBSIZE").split(b":")[-1])
        time.sleep(0.1)
    assert stored > 0, "writes to the restarted Redis never resumed"
    row = [[4.4, 2.9, 1.5, 0.2]]
    assert predict(nginx, row).headers["X-Cache"] == "miss"
    assert predict(nginx, row).headers["X-Cache"] == "hit"
    assert int(redis.command("DBSIZE").split(b":")[-1]) > stored


def test_cheap_models_skip_redis_and_slow_ones_share_it(store_dir, tmp_path):
    """By default a model faster than a round trip stays per worker; a slow one uses Redis."""
    run = tmp_path / "run"
    redis = RedisServer(run).start()
    # iris-rf in scikit-learn takes milliseconds; iris on its compiled graph microseconds.
    env = {"PREDICTOR_RUNTIME_OVERRIDES": "iris-rf=sklearn"}
    gunicorn = Gunicorn(run, store_dir, redis_url=redis.url, workers=1, env=env).start()
    try:
        url = f"{gunicorn.url}/v1/models/{{}}:predict"
        for model in ("iris", "iris", "iris-rf", "iris-rf"):
            requests.post(url.format(model), json={"instances": [IRIS_ROW]}, timeout=5)
        keys = redis.command("KEYS", "*").decode()
        assert ":iris-rf:" in keys and ":iris:" not in keys
        again = requests.post(url.format("iris"), json={"instances": [IRIS_ROW]}, timeout=5)
        assert again.headers["X-Cache"] == "hit"  # from this worker's own LRU
    finally:
        gunicorn.stop()
        redis.stop()


def test_promotion_never_serves_the_old_versions_cached_answer(stack, store_dir):
    _, _, nginx = stack
    store = ModelStore(store_dir)
    predict(nginx, [IRIS_ROW])
    assert predict(nginx, [IRIS_ROW]).headers["X-Cache"] == "hit"
    shutil.copytree(store.version_dir("iris", "1"), store.version_dir("iris", "2"))
    manifest = store.version_dir("iris", "2") / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": "1"', '"version": "2"'))
    resign(store.version_dir("iris", "2"))
    store.promote("iris", "2")
    deadline = time.monotonic() + 10
    answers: list[requests.Response] = []
    while time.monotonic() < deadline:
        batch = [predict(nginx, [IRIS_ROW]) for _ in range(10)]
        answers += batch
        if all(a.json()["version"] == "2" for a in batch):
            break
    versions = [a.json()["version"] for a in answers]
    assert versions[-10:] == ["2"] * 10, versions
    assert all(a.headers["X-Model-Version"] == a.json()["version"] for a in answers)
    # The first version-2 answer had to be computed: v1's cache entry never answers for v2.
    first_v2 = next(a for a in answers if a.json()["version"] == "2")
    assert first_v2.headers["X-Cache"] == "miss"
