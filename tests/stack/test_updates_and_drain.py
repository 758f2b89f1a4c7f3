"""Promotion notices over Redis, and the SIGTERM drain of the real gunicorn."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from service.store import ModelStore
from tests.helpers import IRIS_ROW
from tools.stack import Gunicorn, RedisServer

PREDICTOR = str(Path(sys.executable).with_name("predictor"))


def copy_version(store: ModelStore, name: str, source: str, target: str) -> None:
    shutil.copytree(store.version_dir(name, source), store.version_dir(name, target))
    manifest = store.version_dir(name, target) / "manifest.json"
    manifest.write_text(
        manifest.read_text().replace(f'"version": "{source}"', f'"version": "{target}"')
    )


def served_versions(url: str, n: int = 20) -> set[str]:
    return {
        requests.post(f"{url}/predict", json={"input": IRIS_ROW}, timeout=5).json()["version"]
        for _ in range(n)
    }


def test_redis_notice_swaps_all_workers_long_before_the_poll(store_dir, tmp_path):
    redis = RedisServer(tmp_path).start()
    # A 60 s poll: only the notice can explain a swap within a second or two.
    gunicorn = Gunicorn(
        tmp_path, store_dir, redis_url=redis.url, env={"PREDICTOR_POLL_INTERVAL_SECONDS": "60"}
    ).start()
    try:
        copy_version(ModelStore(store_dir), "iris", "1", "2")
        time.sleep(1.5)  # let both workers subscribe
        start = time.monotonic()
        result = subprocess.run(
            [PREDICTOR, "promote", "iris", "2", "--store", str(store_dir)],
            capture_output=True, text=True, timeout=60,
            env={"PREDICTOR_REDIS_URL": redis.url, "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert result.returncode == 0 and "notified over Redis" in result.stdout, result.stderr
        while served_versions(gunicorn.url) != {"2"}:
            assert time.monotonic() - start < 10, "workers did not converge"
            time.sleep(0.1)
        assert time.monotonic() - start < 10
    finally:
        gunicorn.stop()
        redis.stop()


def test_sigterm_drains_then_exits_losing_nothing(store_dir, tmp_path):
    gunicorn = Gunicorn(
        tmp_path, store_dir, env={"PREDICTOR_DRAIN_SECONDS": "2", "PREDICTOR_GRACEFUL_TIMEOUT": "5"}
    ).start()
    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    def traffic() -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                r = requests.post(f"{gunicorn.url}/predict", json={"input": IRIS_ROW}, timeout=5)
                if r.status_code != 200:
                    failures.append(str(r.status_code))
                answered += 1
            except requests.ConnectionError:
                return  # the listener closed: a load balancer would have stopped sending
            except requests.RequestException as exc:
                failures.append(repr(exc))

    thread = threading.Thread(target=traffic)
    thread.start()
    time.sleep(0.5)
    gunicorn.signal(signal.SIGTERM)
    time.sleep(0.5)
    during = requests.get(f"{gunicorn.url}/readyz", timeout=5)
    assert during.status_code == 503 and during.json()["status"] == "draining"
    still = requests.post(f"{gunicorn.url}/predict", json={"input": IRIS_ROW}, timeout=5)
    assert still.status_code == 200  # the listener stays open through the drain delay
    started = time.monotonic()
    assert gunicorn.wait(15), "gunicorn did not exit within drain + graceful timeout"
    stop.set()
    thread.join(10)
    assert time.monotonic() - started < 8
    assert failures == [] and answered > 10
