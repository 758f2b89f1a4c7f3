"""The loading-trust attacks against the real gunicorn (2 workers): a marker proves no code ran."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests

from service.auth import hash_key
from service.store import ModelStore
from tests.conftest import IRIS_ROW, TEST_SIGNING_KEY
from tools.attacks import plant_version
from tools.stack import VENV_BIN, Gunicorn

KEY = "stack-client-key-0123456789"


def _metric(url: str, reason: str, version: str) -> float:
    wanted = (
        f'predictor_model_load_failures_total{{model="iris",reason="{reason}",version="{version}"}}'
    )
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(wanted):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize(
    ("signed", "reason"), [(False, "unsigned"), (True, "untrusted_types")],
    ids=["unsigned manifest", "manifest signed with the real key"],
)  # fmt: skip
def test_promoted_timeit_skops_runs_nothing_and_v1_keeps_serving(
    store_dir, tmp_path, signed, reason
):
    store = ModelStore(store_dir)
    marker = tmp_path / "code-ran"
    server = Gunicorn(tmp_path / "run", store_dir, workers=2).start()
    try:
        plant_version(store, "iris", "2", marker, "timeit.timeit",
                      signing_key=TEST_SIGNING_KEY if signed else None)  # fmt: skip
        store.promote("iris", "2")
        deadline = time.monotonic() + 20
        while _metric(server.url, reason, "2") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _metric(server.url, reason, "2") == 2  # each worker refused it once
        for _ in range(20):
            body = requests.post(f"{server.url}/predict", json={"input": IRIS_ROW}, timeout=5)
            assert body.json()["version"] == "1" and body.json()["prediction"] == ["setosa"]
        time.sleep(2.5)  # more polls: a refused version is not tried again
        assert _metric(server.url, reason, "2") == 2
    finally:
        server.stop()
    assert not marker.exists()


def test_unauthenticated_version_get_loads_nothing(store_dir, tmp_path):
    store = ModelStore(store_dir)
    marker = tmp_path / "code-ran"
    plant_version(store, "iris", "2", marker)  # never promoted
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "keys").write_text(f"alice:{hash_key(KEY)}\n")
    (secrets / "token").write_text("t" * 40 + "\n")
    env = {"PREDICTOR_API_KEYS_FILE": str(secrets / "keys"),
           "PREDICTOR_ADMIN_TOKEN_FILE": str(secrets / "token")}  # fmt: skip
    server = Gunicorn(tmp_path / "run", store_dir, workers=2, env=env).start()
    try:
        for _ in range(10):
            url = f"{server.url}/v2/models/iris/versions/2/ready"
            assert requests.get(url, timeout=5).status_code == 401
            keyed = requests.get(url, headers={"X-API-Key": KEY}, timeout=5)
            assert keyed.status_code == 404 and "servable versions: 1" in keyed.json()["error"]
        assert _metric(server.url, "unsigned", "2") == 0  # never even tried
    finally:
        server.stop()
    assert not marker.exists()


@pytest.mark.parametrize("content", ["", "# only a comment\n", "short\n"])
def test_bad_signing_key_file_stops_gunicorn_at_start(store_dir, tmp_path, content):
    key_file = tmp_path / "signing.key"
    key_file.write_text(content)
    server = Gunicorn(tmp_path / "run", store_dir, workers=2,
                      env={"PREDICTOR_SIGNING_KEY_FILE": str(key_file)})  # fmt: skip
    result = subprocess.run(
        [str(VENV_BIN / "gunicorn"), "-c", "python:service.gunicorn_conf", "service.wsgi:app"],
        env=server.environment(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith("predictor: cannot start: "), lines
    assert str(key_file) in lines[0]
