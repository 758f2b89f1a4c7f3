"""Promotion notices over Redis, and the SIGTERM drain of the real gunicorn."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from service.notify import CHANNEL
from service.store import ModelStore
from tests.conftest import TEST_SIGNING_KEY
from tests.helpers import IRIS_ROW
from tools.attacks import signed_copy
from tools.stack import Gunicorn, RedisServer, wait_until

PREDICTOR = str(Path(sys.executable).with_name("predictor"))


def copy_version(store: ModelStore, name: str, source: str, target: str) -> None:
    """``source`` republished as ``target``, signed (the version is part of the signature)."""
    signed_copy(store, name, source, target, TEST_SIGNING_KEY)


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

        def subscribed() -> bool:  # both workers listen: counted by Redis, not waited for
            reply = redis.command("PUBSUB", "NUMSUB", CHANNEL).decode()
            return reply.rstrip().splitlines()[-1].lstrip(":") == str(gunicorn.workers)

        wait_until(subscribed, 60, "both workers subscribed to model updates")
        start = time.monotonic()
        result = subprocess.run(
            [PREDICTOR, "promote", "iris", "2", "--store", str(store_dir)],
            capture_output=True, text=True, timeout=60,
            env={"PREDICTOR_REDIS_URL": redis.url, "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert result.returncode == 0 and "notified over Redis" in result.stdout, result.stderr
        # Half the 60 s poll: still only the notice explains it, on a slow machine too.
        while served_versions(gunicorn.url) != {"2"}:
            assert time.monotonic() - start < 30, "workers did not converge"
            time.sleep(0.1)
        print(f"every worker serves version 2 {time.monotonic() - start:.1f} s after promote")
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
    wait_until(lambda: answered >= 5, 60, "5 answers before SIGTERM")  # counted, not timed
    gunicorn.signal(signal.SIGTERM)
    at_sigterm = answered
    time.sleep(0.5)
    during = requests.get(f"{gunicorn.url}/readyz", timeout=5)
    assert during.status_code == 503 and during.json()["status"] == "draining"
    still = requests.post(f"{gunicorn.url}/predict", json={"input": IRIS_ROW}, timeout=5)
    assert still.status_code == 200  # the listener stays open through the drain delay
    started = time.monotonic()
    # The arbiter enforces drain + graceful timeout itself; 60 s only catches a hang.
    assert gunicorn.wait(60), "gunicorn did not exit after drain + graceful timeout"
    print(f"exited {time.monotonic() - started:.1f} s after the drain check")
    stop.set()
    thread.join(10)
    assert failures == [] and answered > at_sigterm  # requests during the drain were served
