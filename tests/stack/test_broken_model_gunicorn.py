"""A FIFO as one model's ``current`` under the real gunicorn (issue 15, finding 8).

Before the fix the FIFO hung each worker that read it (at start and in the
watcher) and 500'd readiness for the whole server. Every wait here is bounded:
a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import os
import time

import pytest
import requests

from service.store import ModelStore
from tools.stack import Gunicorn

from ..app.test_model_isolation import copy_version
from ..conftest import IRIS_ROW


def _predict(base: str, model: str) -> requests.Response:
    return requests.post(f"{base}/v1/models/{model}:predict", json={"instances": [IRIS_ROW]},
                         timeout=5)  # fmt: skip


@pytest.fixture
def fifo_store(store_dir):
    current = store_dir / "diabetes" / "current"
    current.unlink()
    os.mkfifo(current)
    return store_dir


def test_fifo_current_leaves_every_other_model_serving_and_ready(fifo_store, tmp_path):
    server = Gunicorn(tmp_path / "run", fifo_store, workers=2, inherit_settings=False,
                      env={"PREDICTOR_POLL_INTERVAL_SECONDS": "0.2"})  # fmt: skip
    server.start(timeout=90)  # starting at all proves no worker blocked on the FIFO
    try:
        base = server.url
        ready = requests.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 200
        assert [u["name"] for u in ready.json()["unavailable"]] == ["diabetes"]
        assert "FIFO" in ready.json()["unavailable"][0]["reason"]
        assert requests.get(f"{base}/v2/health/ready", timeout=5).status_code == 200
        assert requests.get(f"{base}/v1/models", timeout=5).status_code == 200
        for _ in range(20):  # both workers answer
            assert _predict(base, "iris").status_code == 200
            assert _predict(base, "iris-rf").status_code == 200

        # A FIFO manifest while serving (the watchers check manifests every poll), then a promotion
        # of a model sorted after both broken ones: every worker picks it up.
        store = ModelStore(fifo_store)
        (fifo_store / "iris" / "3").mkdir()
        os.mkfifo(fifo_store / "iris" / "3" / "manifest.json")
        copy_version(store, "iris-rf", "1", "2")
        (fifo_store / "iris-rf" / "current").write_text("2\n")
        deadline = time.monotonic() + 30
        seen: set[str] = set()
        while time.monotonic() < deadline:
            seen = {_predict(base, "iris-rf").json()["version"] for _ in range(20)}
            if seen == {"2"}:
                break
            time.sleep(0.2)
        assert seen == {"2"}
        assert _predict(base, "iris").status_code == 200

        metrics = requests.get(f"{base}/metrics", timeout=5).text
        wanted = 'predictor_model_broken{model="diabetes",part="current"'
        broken = [ln for ln in metrics.splitlines() if ln.startswith(wanted)]
        assert broken and all(ln.endswith(" 1.0") for ln in broken), broken
    finally:
        server.stop()
