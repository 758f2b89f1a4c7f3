"""Real gunicorn serving from a real S3 server: hot swap, S3 killed mid-traffic, S3 back."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from service.store_s3 import S3ModelStore
from tools.stack import Gunicorn, SeaweedFS

from ..conftest import IRIS_ROW

PREDICTOR = str(Path(sys.executable).with_name("predictor"))
REPO = Path(__file__).resolve().parents[2]
KEY = "s3-serve-signing-key-0123456789abcdef"  # 32+ bytes: shorter keys stop the service


def served(url: str, n: int = 20) -> set[str]:
    return {
        requests.post(f"{url}/predict", json={"input": IRIS_ROW}, timeout=5).json()["version"]
        for _ in range(n)
    }


def wait_served(url: str, wanted: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (got := served(url)) != wanted:
        assert time.monotonic() < deadline, f"workers serve {got}, expected {wanted}"
        time.sleep(0.2)


def metric_total(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def test_gunicorn_serves_hot_swaps_and_survives_s3_going_away(tmp_path, monkeypatch):
    s3 = SeaweedFS(tmp_path / "s3").start()
    env = {**s3.aws_env(), "PREDICTOR_MODEL_STORE": "s3://predictor/serve"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    gunicorn = None
    try:
        from service.publish import publish_estimator

        from .test_store_s3 import _iris_estimator

        store = S3ModelStore(env["PREDICTOR_MODEL_STORE"], cache_dir=tmp_path / "publisher")
        for version in ("1", "2"):
            publish_estimator(
                store, _iris_estimator(), name="iris", version=version, signing_key=KEY.encode(),
                artifact_format="joblib", compile_graph=False, promote=version == "1",
            )  # fmt: skip
        gunicorn = Gunicorn(
            tmp_path, env["PREDICTOR_MODEL_STORE"], workers=2, inherit_settings=False,
            env={**env, "PREDICTOR_SIGNING_KEY": KEY, "PREDICTOR_POLL_INTERVAL_SECONDS": "0.3",
                 "PREDICTOR_STORE_CACHE_DIR": str(tmp_path / "worker-cache")},
        ).start()  # fmt: skip
        assert served(gunicorn.url) == {"1"}
        # The workers' local copy is on disk, fetched whole and named after its manifest.
        (copy,) = (tmp_path / "worker-cache" / "iris").glob("1-*")
        assert (copy / "manifest.json").read_bytes() == store.client.get_object(
            Bucket=store.bucket, Key=store._key("iris", "1", "manifest.json")
        )["Body"].read()

        cli_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env}
        promoted = subprocess.run(
            [PREDICTOR, "promote", "iris", "2"], capture_output=True, text=True, timeout=60,
            env=cli_env, cwd=tmp_path,
        )  # fmt: skip
        assert promoted.returncode == 0, promoted.stderr
        wait_served(gunicorn.url, {"2"})

        # S3 dies mid-traffic: every request is still answered, readiness holds.
        failures: list[str] = []
        answered = [0]
        stop = threading.Event()

        def traffic() -> None:
            with requests.Session() as http:
                while not stop.is_set():
                    try:
                        r = http.post(
                            f"{gunicorn.url}/predict", json={"input": IRIS_ROW}, timeout=10
                        )
                        if r.status_code != 200 or r.json()["version"] != "2":
                            failures.append(f"{r.status_code} {r.text[:100]}")
                        answered[0] += 1
                    except requests.RequestException as exc:
                        failures.append(str(exc))

        threads = [threading.Thread(target=traffic) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        s3.kill()
        deadline = time.monotonic() + 30
        while metric_total(gunicorn.url, "predictor_store_errors_total") < 2:
            assert time.monotonic() < deadline, "no store error counted while S3 is down"
            time.sleep(0.3)
        for _ in range(10):
            assert requests.get(f"{gunicorn.url}/readyz", timeout=5).status_code == 200
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(30)
        assert answered[0] >= 50
        assert failures == [], failures[:5]
        log = gunicorn.log_file.read_text()
        assert "serving what is loaded" in log

        # S3 back: the next change is picked up again.
        s3.start()
        back = subprocess.run(
            [PREDICTOR, "rollback", "iris"], capture_output=True, text=True, timeout=60,
            env=cli_env, cwd=tmp_path,
        )  # fmt: skip
        assert back.returncode == 0, back.stderr
        wait_served(gunicorn.url, {"1"})
        assert "reachable again" in gunicorn.log_file.read_text()
        assert not list(tmp_path.rglob("s3:*")) and not (REPO / "s3:").exists()
    finally:
        if gunicorn is not None:
            gunicorn.stop()
        s3.stop()
