"""One model's broken store entries harm no other model (issue 15, finding 8).

Before the fix: a corrupt ``current`` of one model 500'd /readyz, /v2/health/ready
and /v1/models for the whole server and stopped promotions of the models sorted
after it; a corrupt manifest of a non-current version 500'd the version routes;
after a restart a refused promotion left its model unserved.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from service import model_health
from service.app import create_app
from service.metrics import render
from service.settings import Settings
from service.state import state
from service.store import ModelStore

from ..helpers import IRIS_ROW, resign
from ..unit.test_store_isolation import BROKEN

ADMIN = "a" * 40
DIABETES_ROW = [0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]


def copy_version(store: ModelStore, name: str, source: str, target: str, tamper: bool = False):
    """A new version copied from ``source``; ``tamper`` corrupts its artifact (digest fails)."""
    directory = store.version_dir(name, target)
    shutil.copytree(store.version_dir(name, source), directory)
    manifest = directory / "manifest.json"
    fields = json.loads(manifest.read_text()) | {"version": target}
    manifest.write_text(json.dumps(fields))
    resign(directory)  # a properly published copy, until ``tamper`` breaks its files
    if tamper:  # every artifact (estimator and compiled graph) fails its digest
        for path in directory.iterdir():
            if path.name != "manifest.json":
                with open(path, "ab") as fh:
                    fh.write(b"tampered")
    return directory


def _app(store_dir: Path):
    return create_app(Settings(MODEL_STORE=store_dir, ADMIN_TOKEN=ADMIN))


@pytest.mark.parametrize("case", ["fifo", "directory", "bad utf-8", "symlink out of the store"])
def test_broken_current_leaves_every_other_model_serving_and_ready(store_dir, tmp_path, case):
    plant, reason = BROKEN[case]
    current = store_dir / "diabetes" / "current"  # "diabetes" sorts before every other model
    current.unlink()
    plant(current, tmp_path)
    app = _app(store_dir)
    client = app.test_client()

    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    assert {m["name"] for m in ready.get_json()["models"]} == {"iris", "iris-rf"}
    [broken] = ready.get_json()["unavailable"]
    assert broken["name"] == "diabetes" and reason in broken["reason"]
    assert client.get("/v2/health/ready").status_code == 200

    listed = client.get("/v1/models")
    assert listed.status_code == 200
    models = {m["name"]: m for m in listed.get_json()["models"]}
    assert models["iris"]["ready"] and models["iris-rf"]["ready"]
    assert not models["diabetes"]["ready"]
    assert models["diabetes"]["problems"][0]["part"] == "current"
    assert reason in models["diabetes"]["problems"][0]["reason"]

    index = client.post("/v2/repository/index", headers={"Authorization": f"Bearer {ADMIN}"})
    assert index.status_code == 200
    by_name = {m["name"]: m for m in index.get_json()}
    assert by_name["diabetes"]["state"] == "UNAVAILABLE" and reason in by_name["diabetes"]["reason"]
    assert by_name["iris-rf"]["state"] == "READY"

    assert client.post("/predict", json={"input": IRIS_ROW}).status_code == 200
    rf = client.post("/v1/models/iris-rf:predict", json={"instances": [IRIS_ROW]})
    assert rf.status_code == 200
    unserved = client.post("/v1/models/diabetes:predict", json={"instances": [DIABETES_ROW]})
    assert unserved.status_code == 503 and reason in unserved.get_json()["error"]["message"]

    # A promotion of a model sorted after the broken one is still picked up.
    store = ModelStore(store_dir)
    copy_version(store, "iris-rf", "1", "2")
    store.promote("iris-rf", "2")
    registry = state(app).registry
    registry.refresh()
    assert registry.serving("iris-rf").version == "2"

    # The gauge operators alert on names the model and the broken part.
    registry.publish_metrics = True
    model_health.publish(store, registry._refused)
    text = render()[0].decode()
    assert 'predictor_model_broken{model="diabetes",part="current"} 1.0' in text
    assert 'predictor_model_broken{model="iris",part="current"} 0.0' in text


@pytest.mark.parametrize("case", ["fifo", "directory", "bad utf-8"])
def test_broken_manifest_of_another_version_never_500s(store_dir, tmp_path, case):
    plant, reason = BROKEN[case]
    planted = store_dir / "iris" / "2"
    planted.mkdir()
    plant(planted / "manifest.json", tmp_path)
    client = _app(store_dir).test_client()

    answers = [
        client.get("/v2/models/iris/versions/2"),
        client.get("/v2/models/iris/versions/2/ready"),
        client.post("/v2/models/iris/versions/2/infer", json={"inputs": []}),
        client.post("/v1/models/iris/versions/2:predict", json={"instances": [IRIS_ROW]}),
    ]
    for answer in answers:
        assert answer.status_code in (404, 503), (answer.request.path, answer.get_data())
    assert answers[0].status_code == 503 and reason in answers[0].get_json()["error"]
    listed = client.get("/v1/models")
    assert listed.status_code == 200
    iris = next(m for m in listed.get_json()["models"] if m["name"] == "iris")
    assert iris["ready"] and iris["problems"][0] | {"reason": ""} == {
        "part": "manifest", "version": "2", "reason": "",
    }  # fmt: skip
    assert client.get("/v1/models/iris").status_code == 200
    assert client.post("/predict", json={"input": IRIS_ROW}).get_json()["version"] == "1"
    assert client.get("/readyz").status_code == 200


def test_refused_promotion_keeps_the_last_known_good_across_restarts(store_dir):
    store = ModelStore(store_dir)
    first = _app(store_dir).test_client()
    assert first.post("/predict", json={"input": IRIS_ROW}).get_json()["version"] == "1"
    assert store.verified("iris") == "1"  # written when version 1 first served

    copy_version(store, "iris", "1", "2", tamper=True)
    store.promote("iris", "2")
    restarted = _app(store_dir).test_client()  # a new worker: nothing in memory
    answer = restarted.post("/predict", json={"input": IRIS_ROW})
    assert answer.status_code == 200 and answer.get_json()["version"] == "1"
    iris = restarted.get("/v1/models/iris").get_json()
    assert iris["current_version"] == "2" and iris["serving_version"] == "1"
    assert iris["refused"]["version"] == "2" and "digest_mismatch" in iris["refused"]["reason"]
    assert restarted.get("/readyz").status_code == 200
    assert store.verified("iris") == "1"  # a refused version never becomes last-known-good

    # Without the pointer the restart has nothing to fall back to: the model is unserved,
    # reported, and the other models stay ready.
    os.unlink(store_dir / "iris" / "verified")
    bare = _app(store_dir).test_client()
    assert bare.post("/predict", json={"input": IRIS_ROW}).status_code == 503
    ready = bare.get("/readyz")
    assert ready.status_code == 200
    assert [u["name"] for u in ready.get_json()["unavailable"]] == ["iris"]


def test_broken_current_at_restart_serves_the_last_known_good(store_dir):
    _app(store_dir)  # serves version 1 once: the store records it
    current = store_dir / "iris" / "current"
    current.unlink()
    os.mkfifo(current)
    client = _app(store_dir).test_client()
    answer = client.post("/predict", json={"input": IRIS_ROW})
    assert answer.status_code == 200 and answer.get_json()["version"] == "1"
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready"
    assert [u["name"] for u in ready["unavailable"]] == ["iris"]
    assert "FIFO" in ready["unavailable"][0]["reason"]
