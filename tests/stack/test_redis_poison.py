"""Poisoned and garbage Redis entries, against a real redis-server with AUTH (finding 7).

Before the fix a poisoned entry was returned as the prediction and malformed
ones gave 500s; Redis had no password. Every key the service writes is
overwritten here with an invalid value, then the same rows are asked again.
"""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
import redis as redis_py
import requests

from tools.stack import Gunicorn, RedisServer

from ..conftest import IRIS_ROW

ROWS = [IRIS_ROW, [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [6.3, 2.5, 5.0, 1.9]]
POISON = [
    b"\x00\xffgarbage",  # not JSON
    b"[]",
    b'{"prediction": "virginica"}',
    orjson.dumps(["not-a-class", None]),
    orjson.dumps([99, None]),
    orjson.dumps([2, [0.5, 0.5]]),  # wrong length
    orjson.dumps([2, [0.9, 0.9, 0.9]]),  # does not sum to 1
    b"[2, [NaN, 0.5, 0.5]]",
    orjson.dumps([[2], None]),
]


@pytest.fixture
def cached_api(store_dir, tmp_path):
    redis = RedisServer(tmp_path, password="s3cret-" + "x" * 32).start()
    # The iris LR is cheaper than a Redis round trip: share its answers through Redis anyway.
    env = {"PREDICTOR_CACHE_SHARED_MIN_US": "0", "PREDICTOR_CACHE_NEAR_ENTRIES": "0"}
    env.update(redis.client_env())
    api = Gunicorn(tmp_path, store_dir, workers=2, env=env, inherit_settings=False)
    try:
        api.start()
        yield redis, api
    finally:
        api.stop()
        redis.stop()


def _ask(api: Gunicorn, probabilities: bool = False) -> requests.Response:
    body = {"instances": ROWS, "probabilities": probabilities}
    return requests.post(f"{api.url}/v1/models/iris:predict", json=body, timeout=10)


def test_redis_requires_the_password(cached_api):
    redis, _ = cached_api
    anonymous = redis_py.Redis(port=redis.port, socket_timeout=2)
    with pytest.raises(redis_py.AuthenticationError):
        anonymous.ping()
    assert redis.ping()  # with AUTH


@pytest.mark.parametrize("probabilities", [False, True])
def test_poisoned_entries_are_answered_from_the_model(cached_api, probabilities):
    redis, api = cached_api
    client = redis_py.Redis(port=redis.port, password=redis.password, socket_timeout=2)
    truth = _ask(api, probabilities)
    assert truth.status_code == 200 and truth.headers["X-Cache"] == "miss"
    assert _ask(api, probabilities).headers["X-Cache"] == "hit"
    keys = sorted(client.keys("p:iris:*"))
    assert len(keys) == len(ROWS)

    # Probabilities where none were asked, or none where they were.
    mode = orjson.dumps([2, None]) if probabilities else orjson.dumps([2, [0.0, 0.0, 1.0]])
    for poison in [*POISON, mode]:
        for key in keys:
            client.set(key, poison)
        answer = _ask(api, probabilities)
        assert answer.status_code == 200, (poison, answer.text)
        assert answer.json() == truth.json(), poison
        assert answer.headers["X-Cache"] == "miss"
        # The service overwrote the poison with the model's answer.
        assert all(client.get(k) != poison for k in keys)

    metrics = requests.get(f"{api.url}/metrics", timeout=10).text
    line = next(ln for ln in metrics.splitlines()
                if ln.startswith('predictor_cache_invalid_total{model="iris"}'))  # fmt: skip
    assert float(line.rsplit(" ", 1)[1]) == (len(POISON) + 1) * len(ROWS)


def test_an_empty_password_file_stops_the_service_at_start(store_dir, tmp_path):
    empty = tmp_path / "redis-password"
    empty.write_text("\n")
    env = {"PREDICTOR_MODEL_STORE": str(store_dir), "PREDICTOR_REDIS_URL": "redis://127.0.0.1:1/0",
           "PREDICTOR_REDIS_PASSWORD_FILE": str(empty)}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", "from service.app import create_app; create_app()"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"PREDICTOR_REDIS_PASSWORD_FILE {empty} is empty" in result.stderr
