"""Canary rollouts in-process: the split, sticky keys, promote ends it, --off, refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from service import canary
from service.app import create_app
from service.auth import hash_key
from service.settings import Settings
from service.state import state
from service.store import ModelStore

from ..conftest import IRIS_ROW
from ..helpers import resign, run_cli


def add_version(store: ModelStore, source: str = "1", target: str = "2") -> None:
    shutil.copytree(store.version_dir("iris", source), store.version_dir("iris", target))
    manifest = store.version_dir("iris", target) / "manifest.json"
    manifest.write_text(
        manifest.read_text().replace(f'"version": "{source}"', f'"version": "{target}"')
    )
    resign(store.version_dir("iris", target))


def answered_by(client, n: int, headers: dict | None = None) -> Counter:  # noqa: ANN001
    versions: Counter = Counter()
    for _ in range(n):
        r = client.post("/predict", json={"input": IRIS_ROW}, headers=headers or {})
        assert r.status_code == 200, r.get_json()
        body = r.get_json()
        assert body["version"] == r.headers["X-Model-Version"]  # every answer says its version
        versions[body["version"]] += 1
    return versions


def cli(store_dir: Path, *args: str) -> subprocess.CompletedProcess:
    # No PREDICTOR_* setting but the store; the test signing key lives under
    # XDG_CONFIG_HOME (tests/conftest.py).
    return run_cli(*args, "--store", str(store_dir))


def version_requests(version: str, role: str) -> float:
    value = REGISTRY.get_sample_value(
        "predictor_version_requests_total",
        {"model": "iris", "version": version, "role": role, "outcome": "ok"},
    )
    return value or 0.0


def test_thirty_percent_canary_answers_about_a_third_of_300(store_dir, settings):
    store = ModelStore(store_dir)
    add_version(store)
    app = create_app(settings)
    assert canary.start(store, settings, "iris", "2", 30).percent == 30
    before = version_requests("2", "canary"), version_requests("1", "current")
    state(app).registry.refresh()  # what the watcher does on its next poll
    with app.test_client() as client:
        versions = answered_by(client, 300)
        assert set(versions) == {"1", "2"}
        assert 60 <= versions["2"] <= 120, versions
        # A pinned request never goes to the canary's lottery.
        pinned = client.post("/predict", json={"input": IRIS_ROW, "version": "1"})
        assert pinned.get_json()["version"] == "1"
    # Per-version metrics count each side exactly.
    assert version_requests("2", "canary") - before[0] == versions["2"]
    assert version_requests("1", "current") - before[1] == versions["1"]


def test_sticky_canary_gives_each_api_key_one_version(store_dir):
    keys = {f"client{i}": f"secret-key-{i}" for i in range(12)}
    settings = Settings(
        MODEL_STORE=store_dir, API_KEYS=",".join(f"{k}:{hash_key(v)}" for k, v in keys.items())
    )
    store = ModelStore(store_dir)
    add_version(store)
    app = create_app(settings)
    canary.start(store, settings, "iris", "2", 50, sticky=True)
    state(app).registry.refresh()
    seen = {}
    with app.test_client() as client:
        for key_id, key in keys.items():
            versions = answered_by(client, 10, {"X-API-Key": key})
            assert len(versions) == 1, f"{key_id} saw {versions}"
            seen[key_id] = next(iter(versions))
    assert set(seen.values()) == {"1", "2"}, seen  # 12 keys at 50%: both sides get some


def test_promote_of_the_canary_ends_it_and_off_ends_it_too(store_dir, settings):
    store = ModelStore(store_dir)
    add_version(store)
    add_version(store, "1", "3")
    started = cli(store_dir, "canary", "iris", "2", "--percent", "40")
    assert started.returncode == 0, started.stderr
    assert "takes 40% of the requests naming no version" in started.stdout
    assert canary.read_state(store, "iris") == canary.CanaryState("2", 40.0)

    promoted = cli(store_dir, "promote", "iris", "2")
    assert promoted.returncode == 0 and "canary of version 2 ended" in promoted.stdout
    assert canary.read_state(store, "iris") is None and store.current("iris") == "2"
    app = create_app(settings)
    with app.test_client() as client:
        assert answered_by(client, 30) == Counter({"2": 30})

    assert cli(store_dir, "canary", "iris", "3", "--percent", "20").returncode == 0
    registry = state(app).registry
    registry.refresh()
    assert registry.canary.active("iris") == canary.CanaryState("3", 20.0)
    off = cli(store_dir, "canary", "iris", "--off")
    assert off.returncode == 0 and "canary of version 3 ended" in off.stdout
    registry.refresh()
    assert registry.canary.active("iris") is None
    with app.test_client() as client:
        assert answered_by(client, 30) == Counter({"2": 30})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["iris", "2", "--percent", "0"], "expected a share above 0 and below 100"),
        (["iris", "2", "--percent", "100"], "100% is a promotion"),
        (["iris", "9", "--percent", "10"], "has no version '9'"),
        (["iris", "1", "--percent", "10"], "already the current version"),
        (["iris", "2"], "expected NAME VERSION --percent P"),
        (["nope", "2", "--percent", "10"], "model 'nope' not found"),
    ],
)
def test_bad_canary_requests_say_what_is_wrong(store_dir, args, message):
    add_version(ModelStore(store_dir))
    result = cli(store_dir, "canary", *args)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (store_dir / "iris" / "canary").exists()


def test_a_canary_that_fails_verification_is_refused_before_any_worker_sees_it(store_dir):
    store = ModelStore(store_dir)
    add_version(store)
    for artifact in store.version_dir("iris", "2").iterdir():
        if artifact.name != "manifest.json":  # the estimator and its compiled graph
            artifact.write_bytes(artifact.read_bytes()[:-10] + b"0123456789")
    result = cli(store_dir, "canary", "iris", "2", "--percent", "30")
    assert result.returncode == 1 and "cannot serve: digest_mismatch" in result.stderr
    assert canary.read_state(store, "iris") is None
    # Written by hand anyway: each worker refuses it and current keeps all traffic.
    canary.write_state(store, "iris", canary.CanaryState("2", 50.0))
    app = create_app(Settings(MODEL_STORE=store_dir))
    assert state(app).registry.canary.active("iris") is None
    with app.test_client() as client:
        assert answered_by(client, 20) == Counter({"1": 20})


@pytest.mark.parametrize("plant", ["fifo", "symlink out of the store", "bad utf-8"])
def test_a_broken_canary_file_means_no_canary_and_never_blocks(store_dir, tmp_path, plant):
    """A store writer's FIFO, symlink or garbage in place of the canary state: no canary."""
    store = ModelStore(store_dir)
    add_version(store)
    canary.write_state(store, "iris", canary.CanaryState("2", 50.0))
    path = store_dir / "iris" / canary.CANARY_FILE
    path.unlink()
    if plant == "fifo":
        os.mkfifo(path)  # a plain open() would block here for ever
    elif plant == "bad utf-8":
        path.write_bytes(b'{"version": "2", "percent": 50\xff}')
    else:
        (tmp_path / "outside").write_text('{"version": "2", "percent": 50}')
        path.symlink_to(tmp_path / "outside")
    assert canary.read_state(store, "iris") is None
    client = create_app(Settings(MODEL_STORE=store_dir)).test_client()
    assert set(answered_by(client, 20)) == {"1"}
    canary.write_state(store, "iris", None)  # the operator's --off removes whatever is there
    assert not os.path.lexists(path)
