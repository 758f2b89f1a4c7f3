"""The api image's entrypoint under compose's s3 profile, run for real on this host: when
the profile's S3 endpoint resolves, the store is the bucket (created, the demo models
trained and signed into it) and gunicorn serves from it; when it does not, nothing
changes (the default `docker compose up`). A real SeaweedFS stands in for the `s3`
service; tests/deploy/test_deploy_config.py validates `docker compose --profile s3 config`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import requests
import yaml

from tools.stack import REPO, VENV_BIN, Command, SeaweedFS, free_port, http_status, wait_until

ENTRYPOINT = REPO / "scripts" / "docker-entrypoint.sh"


def _compose_api_env() -> dict[str, str]:
    api = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["api"]
    return {k: str(v) for k, v in api["environment"].items() if k.startswith("COMPOSE_S3_")}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREDICTOR_", "AWS_"))}
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "models").mkdir(exist_ok=True)
    env.update(
        PATH=f"{VENV_BIN}:{env['PATH']}",
        HOME=str(tmp_path / "home"),
        # As in the image: the store volume and the key file the entrypoint creates.
        PREDICTOR_MODEL_STORE=str(tmp_path / "models"),
        PREDICTOR_SIGNING_KEY_FILE=str(tmp_path / "keys" / "signing.key"),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        PREDICTOR_STORE_CACHE_DIR=str(tmp_path / "store-cache"),  # not the shared /tmp default
        PREDICTOR_WORKERS="1",
        PREDICTOR_GRPC_BIND="",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def test_the_compose_file_names_the_profile_store_for_the_entrypoint():
    env = _compose_api_env()
    assert env["COMPOSE_S3_STORE"].startswith("s3://")
    # The endpoint's host is the profile's service: its name resolves only while it runs.
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    host, _, port = env["COMPOSE_S3_ENDPOINT"].removeprefix("http://").partition(":")
    assert host in services and services[host]["profiles"] == ["s3"]
    assert f"-s3.port={port}" in services[host]["command"]


def test_without_the_s3_service_the_store_stays_the_volume(tmp_path):
    env = _env(tmp_path, **_compose_api_env())  # "s3" does not resolve on this host
    proc = subprocess.run(
        ["sh", str(ENTRYPOINT), "env"], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert f"PREDICTOR_MODEL_STORE={tmp_path / 'models'}" in proc.stdout.splitlines()
    assert "AWS_ENDPOINT_URL" not in proc.stdout and "compose s3 profile" not in proc.stdout


def test_with_the_s3_service_the_api_serves_from_the_bucket(tmp_path):
    s3 = SeaweedFS(tmp_path / "s3").start(bucket="warmup")
    port = free_port()
    store = _compose_api_env()["COMPOSE_S3_STORE"]
    env = _env(
        tmp_path,
        COMPOSE_S3_STORE=store,
        COMPOSE_S3_ENDPOINT=s3.endpoint,  # the service's address, here a loopback port
        PREDICTOR_BIND=f"127.0.0.1:{port}",
    )
    argv = ["sh", str(ENTRYPOINT), "gunicorn", "-c", "python:service.gunicorn_conf",
            "service.wsgi:app"]  # fmt: skip
    api = Command(tmp_path / "run", "api", argv)
    api.env = env
    api.executable = "sh"
    try:
        api.start()
        url = f"http://127.0.0.1:{port}"
        # First start trains and verifies the demo models: minutes on a busy core (compose's
        # healthcheck allows 600 s); a dead entrypoint ends the wait at once.
        wait_until(lambda: http_status(url + "/readyz") == 200, 600, "api ready", api.alive)
        r = requests.post(f"{url}/predict", json={"input": [5.1, 3.5, 1.4, 0.2]}, timeout=10)
        assert r.status_code == 200 and r.json()["prediction"] == ["setosa"], r.text
        log = api.log_file.read_text()
        assert f"model store {store} at {s3.endpoint} (compose s3 profile)" in log
        assert "created the bucket predictor" in log
        # The versions live in the bucket, signed with the key the entrypoint made...
        bucket, _, prefix = store.removeprefix("s3://").partition("/")
        keys = [
            o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
        ]
        assert f"{prefix}/iris/current" in keys
        assert any(k.endswith("iris/1/manifest.json") for k in keys)
        assert (tmp_path / "keys" / "signing.key").is_file()
        # ...not in the volume, and no local directory named "s3:" appears.
        assert not any((tmp_path / "models").iterdir())
        assert not list(tmp_path.rglob("s3:*")) and not (REPO / "s3:").exists()
    finally:
        api.stop()
        s3.stop()
