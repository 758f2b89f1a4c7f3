"""A SIGTERM drain on the real gunicorn: every readiness route says not ready from the
instant the master marks the drain, while predictions keep being answered."""

from __future__ import annotations

import signal
import time

import requests

from tools.stack import Gunicorn

from ..conftest import IRIS_ROW

READINESS = [
    "/readyz",
    "/v2/health/ready",
    "/v2/models/iris/ready",
    "/v2/models/iris/versions/1/ready",
]


def test_all_readiness_routes_agree_through_a_drain(store_dir, tmp_path):
    gunicorn = Gunicorn(
        tmp_path,
        store_dir,
        workers=2,
        env={"PREDICTOR_DRAIN_SECONDS": "4", "PREDICTOR_GRACEFUL_TIMEOUT": "5"},
    ).start()
    flag = gunicorn.metrics_dir / "draining.flag"  # what the master writes on SIGTERM
    try:
        with requests.Session() as http:
            for path in READINESS:
                before = http.get(gunicorn.url + path, timeout=5)
                assert before.status_code == 200, (path, before.text)
            gunicorn.signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while not flag.exists():
                assert time.monotonic() < deadline, "the master never marked the drain"
                time.sleep(0.005)
            # From here on, whichever worker answers, every route says not ready.
            answers: dict[str, list[int]] = {path: [] for path in READINESS}
            for _ in range(20):
                for path in READINESS:
                    answers[path].append(http.get(gunicorn.url + path, timeout=5).status_code)
            assert all(codes == [503] * 20 for codes in answers.values()), answers
            assert http.get(gunicorn.url + "/readyz", timeout=5).json()["status"] == "draining"
            model = http.get(gunicorn.url + "/v2/models/iris/ready", timeout=5).json()
            assert model["ready"] is False and "draining" in model["reason"]
            assert http.get(gunicorn.url + "/v2/health/ready", timeout=5).json() == {"ready": False}
            # Still serving through the drain delay: a load balancer is only being told.
            still = http.post(gunicorn.url + "/predict", json={"input": IRIS_ROW}, timeout=5)
            assert still.status_code == 200
            assert http.get(gunicorn.url + "/v2/health/live", timeout=5).status_code == 200
        assert gunicorn.wait(20), "gunicorn did not exit after the drain"
    finally:
        gunicorn.stop()
