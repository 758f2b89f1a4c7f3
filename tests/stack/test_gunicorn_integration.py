"""The real gunicorn with a temporary store: every route over HTTP, promotions, refusals."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import requests

from service.store import ModelStore
from tests.helpers import IRIS_ROW, metrics_text, parse_samples, plant_pickle_bomb, total
from tools.stack import Gunicorn


@pytest.fixture
def server(store_dir, tmp_path):
    gunicorn = Gunicorn(tmp_path / "run", store_dir, workers=2).start()
    try:
        yield gunicorn
    finally:
        gunicorn.stop()


def _post(url: str, body: dict) -> requests.Response:
    return requests.post(url, json=body, timeout=10)


def test_every_route_over_http(server):
    base = server.url
    seed = _post(f"{base}/predict", {"input": IRIS_ROW})
    assert seed.status_code == 200
    assert seed.json() == {"prediction": ["setosa"], "model": "iris", "version": "1"}
    v1 = _post(f"{base}/v1/models/iris:predict", {"instances": [IRIS_ROW, [6.7, 3.0, 5.2, 2.3]]})
    assert v1.json()["predictions"] == ["setosa", "virginica"]
    pinned = _post(f"{base}/v1/models/iris-rf/versions/1:predict", {"instances": [IRIS_ROW]})
    assert (
        pinned.json()["predictions"] == ["setosa"] and pinned.headers["X-Model-Name"] == "iris-rf"
    )
    assert [m["name"] for m in requests.get(f"{base}/v1/models", timeout=5).json()["models"]] == [
        "diabetes", "iris", "iris-rf",
    ]  # fmt: skip
    assert requests.get(f"{base}/v1/models/diabetes", timeout=5).json()["task"] == "regression"
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{base}/readyz", timeout=5).json()["status"] == "ready"
    bad = _post(f"{base}/v1/models/iris:predict", {"instances": [[1, 2]]})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "wrong_feature_count"

    # Both workers answered something; /metrics adds them up whichever worker serves it.
    for _ in range(40):
        _post(f"{base}/predict", {"input": IRIS_ROW})
    text = metrics_text(base)
    samples = parse_samples(text)
    requests_total = "predictor_http_requests_total"
    assert total(samples, requests_total, method="POST", route="/predict", status="200") == 41
    info = {labels: v for (name, labels), v in samples.items() if name == "predictor_model_info"}
    serving = [labels for labels, v in info.items() if ("model", "iris") in labels and v == 1]
    assert len(serving) == 2, serving  # one series per worker

    # The exposition follows Prometheus' conventions (promtool exits 3 on lint findings).
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install the Debian package prometheus"
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_promotion_swaps_every_worker_and_a_pickle_bomb_is_refused(server, store_dir, tmp_path):
    store = ModelStore(store_dir)
    marker = tmp_path / "pwned"
    plant_pickle_bomb(store, "iris", "2", marker)
    store.promote("iris", "2")
    time.sleep(3)  # > POLL_INTERVAL_SECONDS: every worker has looked at the new current
    versions = {_post(f"{server.url}/predict", {"input": IRIS_ROW}).json()["version"]
                for _ in range(20)}  # fmt: skip
    assert versions == {"1"} and not marker.exists()
    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    assert (
        'predictor_model_load_failures_total{model="iris",reason="unsigned_pickle",version="2"}'
        in metrics
    )

    # A good version 3 (a copy of 1) is picked up by every worker within the poll bound.
    shutil.copytree(store.version_dir("iris", "1"), store.version_dir("iris", "3"))
    manifest = store.version_dir("iris", "3") / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": "1"', '"version": "3"'))
    store.promote("iris", "3")
    deadline = time.monotonic() + 10
    seen: set[str] = set()
    while time.monotonic() < deadline:
        seen = {_post(f"{server.url}/predict", {"input": IRIS_ROW}).json()["version"]
                for _ in range(20)}  # fmt: skip
        if seen == {"3"}:
            break
        time.sleep(0.2)
    assert seen == {"3"}
