"""A configured secret that is empty, unreadable, only comments or too short stops the
service at start with a one-line reason; unsafe opt-outs are logged at every start."""

from __future__ import annotations

import logging

import pytest

from service.app import create_app
from service.auth import hash_key
from service.cli import main
from service.secret_files import SecretError
from service.settings import Settings

GOOD = "x" * 32


def _file(tmp_path, name, text):  # noqa: ANN001, ANN202
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("setting", "text", "words"),
    [
        ("SIGNING_KEY_FILE", "", "signing key file .* is empty"),
        ("SIGNING_KEY_FILE", "\n\n  \n", "is empty"),
        ("SIGNING_KEY_FILE", "# a comment only\n", "is empty"),
        ("SIGNING_KEY_FILE", "short\n", "5 bytes; at least 32"),
        ("SIGNING_KEY_FILE", None, "cannot be read"),
        ("ADMIN_TOKEN_FILE", "", "admin token file .* is empty"),
        ("ADMIN_TOKEN_FILE", "t\n", "1 bytes; at least 32"),
        ("ADMIN_TOKEN_FILE", None, "cannot be read"),
        ("API_KEYS_FILE", "", "API keys file .* is empty"),
        ("API_KEYS_FILE", "# alice:...\n# bob:...\n", "is empty"),
        ("API_KEYS_FILE", None, "cannot be read"),
    ],
)
def test_broken_secret_file_stops_the_service(store_dir, tmp_path, setting, text, words):
    path = tmp_path / "missing" if text is None else _file(tmp_path, "secret", text)
    with pytest.raises(SecretError, match=words) as err:
        create_app(Settings(MODEL_STORE=store_dir, **{setting: path}))
    assert "\n" not in str(err.value)


def test_unreadable_secret_file_stops_the_service(store_dir, tmp_path):
    path = tmp_path / "dir-not-file"
    path.mkdir()
    with pytest.raises(SecretError, match="cannot be read"):
        create_app(Settings(MODEL_STORE=store_dir, SIGNING_KEY_FILE=path))


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"SIGNING_KEY": "k"}, "signing key is 1 bytes"),
        ({"ADMIN_TOKEN": "t" * 31}, "admin token is 31 bytes"),
        ({"API_KEYS": " , ,"}, "lists no key"),
    ],
)
def test_short_or_empty_secret_values_stop_the_service(store_dir, settings, words):
    with pytest.raises(SecretError, match=words):
        create_app(Settings(MODEL_STORE=store_dir, **settings))


def test_valid_secrets_serve(store_dir, tmp_path):
    keys = _file(tmp_path, "keys", f"# team\nalice:{hash_key('k')}\n")
    token = _file(tmp_path, "token", GOOD + "\n")
    app = create_app(Settings(MODEL_STORE=store_dir, API_KEYS_FILE=keys, ADMIN_TOKEN_FILE=token))
    assert app.test_client().get("/readyz").status_code == 200


def test_no_signing_key_stops_the_service_unless_opted_out(store_dir, tmp_path, monkeypatch,
                                                         caplog):  # fmt: skip
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "empty-config"))
    with pytest.raises(SecretError, match="no signing key.*PREDICTOR_ALLOW_UNSIGNED"):
        create_app(Settings(MODEL_STORE=store_dir))
    with caplog.at_level(logging.WARNING):
        app = create_app(Settings(MODEL_STORE=store_dir, ALLOW_UNSIGNED=True,
                                  ALLOW_UNSIGNED_PICKLE=True))  # fmt: skip
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("PREDICTOR_ALLOW_UNSIGNED is on" in w for w in warned)
    assert any("PREDICTOR_ALLOW_UNSIGNED_PICKLE is on" in w for w in warned)
    # Unsigned reading: versions load on the allow-list alone (iris serves).
    client = app.test_client()
    assert client.post("/predict", json={"input": [5.1, 3.5, 1.4, 0.2]}).status_code == 200


def test_publishers_create_the_local_key_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    key_file = tmp_path / "config" / "predictor" / "signing.key"
    assert main(["signing-key", "init"]) == 0
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_text().strip()) == 64
    first = key_file.read_text()
    assert main(["signing-key", "init"]) == 0 and key_file.read_text() == first
    assert "kept the existing" in capsys.readouterr().out
    assert Settings().signing_key == first.strip().encode()
    assert main(["signing-key", "new"]) == 0
    assert len(capsys.readouterr().out.strip()) == 64


def test_train_demo_signs_with_a_new_local_key(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    store = tmp_path / "models"
    assert main(["train-demo", "--store", str(store)]) == 0
    assert (tmp_path / "config" / "predictor" / "signing.key").is_file()
    app = create_app(Settings(MODEL_STORE=store))
    ready = app.test_client().get("/readyz").get_json()
    assert ready["status"] == "ready" and len(ready["models"]) == 3
