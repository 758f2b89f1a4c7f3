"""Optional API keys on the prediction routes."""

from __future__ import annotations

import logging

import pytest

from service.app import create_app
from service.auth import hash_key
from service.settings import Settings
from tests.helpers import IRIS_ROW, run_cli

KEY = "k-alice-0123456789"
OTHER = "k-bob-9876543210"


@pytest.fixture
def keyed(store_dir, tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# prediction clients\nbob:{hash_key(OTHER)}\n")
    settings = Settings(
        MODEL_STORE=store_dir, API_KEYS=f"alice:{hash_key(KEY)}", API_KEYS_FILE=keys_file
    )
    return create_app(settings).test_client()


ROUTES = [
    ("/predict", {"input": IRIS_ROW}),
    ("/v1/models/iris:predict", {"instances": [IRIS_ROW]}),
    ("/v1/models/iris/versions/1:predict", {"instances": [IRIS_ROW]}),
]


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_prediction_needs_a_valid_key(keyed, path, body, caplog):
    missing = keyed.post(path, json=body)
    assert missing.status_code == 401
    assert missing.get_json()["error"]["message"].startswith("an API key is required")
    wrong = keyed.post(path, json=body, headers={"X-API-Key": "guess"})
    assert wrong.status_code == 401 and wrong.get_json()["error"]["message"] == (
        "the API key is not valid"
    )
    with caplog.at_level(logging.DEBUG):
        bearer = keyed.post(path, json=body, headers={"Authorization": f"Bearer {KEY}"})
        header = keyed.post(path, json=body, headers={"X-API-Key": OTHER})
    assert bearer.status_code == 200 and bearer.headers["X-API-Key-Id"] == "alice"
    assert header.status_code == 200 and header.headers["X-API-Key-Id"] == "bob"
    assert KEY not in caplog.text and OTHER not in caplog.text


def test_health_and_metadata_stay_open(keyed):
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/readyz").status_code == 200
    assert keyed.get("/v1/models/iris").status_code == 200


def test_without_keys_configured_predictions_are_open(client):
    assert client.post("/predict", json={"input": IRIS_ROW}).status_code == 200


def test_bad_key_entry_is_refused_at_start(store_dir):
    with pytest.raises(ValueError, match="expected id:sha256-hex"):
        create_app(Settings(MODEL_STORE=store_dir, API_KEYS="alice:not-a-hash"))


def test_cli_creates_a_key_whose_entry_verifies(tmp_path):
    result = run_cli("api-key", "new", "carol")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    key = out[0].rsplit(" ", 1)[1]
    entry = out[1].rsplit(" ", 1)[1]
    assert entry == f"carol:{hash_key(key)}"
