"""The model store: manifests, atomic versions, promote and rollback, publish failures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression

from service.errors import PredictorError
from service.manifest import Feature
from service.publish import PublishError, publish_estimator
from service.signing import file_sha256
from service.store import ModelStore


def _fitted_lr() -> LogisticRegression:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


FEATURES = [Feature(name=n) for n in ("a", "b", "c")]


def test_demo_manifest_records_what_the_contract_names(store: ModelStore):
    manifest = json.loads((store.version_dir("iris", "1") / "manifest.json").read_text())
    for key in ("name", "version", "format", "sha256", "sklearn_version", "features",
                "output_labels", "metrics", "sample_input", "created"):  # fmt: skip
        assert manifest[key] not in (None, "", [], {}), key
    assert manifest["sklearn_version"] == sklearn.__version__
    assert manifest["sha256"] == file_sha256(store.version_dir("iris", "1") / "model.skops")
    assert manifest["features"][0] == {
        "name": "sepal length (cm)", "type": "float", "minimum": 4.3, "maximum": 7.9,
        "categories": None, "nullable": False, "missing_rate": None,
    }  # fmt: skip
    assert store.current("iris") == "1"


def test_publish_numbers_versions_and_promote_rollback_walk_history(tmp_path):
    store = ModelStore(tmp_path)
    for _ in range(3):
        publish_estimator(store, _fitted_lr(), name="m", features=FEATURES, promote=True)
    assert store.versions("m") == ["1", "2", "3"] and store.current("m") == "3"
    assert store.rollback("m") == "2" and store.current("m") == "2"
    assert store.rollback("m") == "1"
    with pytest.raises(PredictorError) as err:
        store.rollback("m")
    assert err.value.code == "no_previous_version"
    store.promote("m", "3")
    assert store.rollback("m") == "1"  # back to what was current before 3


def test_promote_unknown_version_is_refused(store: ModelStore):
    with pytest.raises(PredictorError) as err:
        store.promote("iris", "9")
    assert err.value.status == 404 and "available: 1" in err.value.message
    assert store.current("iris") == "1"


def test_versions_sort_numerically(tmp_path):
    store = ModelStore(tmp_path)
    for v in ("2", "10", "1"):
        publish_estimator(store, _fitted_lr(), name="m", version=v, features=FEATURES)
    assert store.versions("m") == ["1", "2", "10"]
    assert store.next_version("m") == "11"


def test_publish_refuses_schema_mismatch_and_bad_names(tmp_path):
    store = ModelStore(tmp_path)
    with pytest.raises(
        PublishError, match="schema mismatch: 2 feature names given, the estimator expects 3"
    ):
        from service.publish import features_for

        features_for(_fitted_lr(), ["a", "b"])
    with pytest.raises(PredictorError, match="not valid"):
        publish_estimator(store, _fitted_lr(), name="../evil", features=FEATURES)
    with pytest.raises(PublishError, match="already exists"):
        publish_estimator(store, _fitted_lr(), name="m", version="1", features=FEATURES)
        publish_estimator(store, _fitted_lr(), name="m", version="1", features=FEATURES)


def test_unwritable_store_fails_cleanly_and_leaves_nothing(tmp_path, monkeypatch):
    store = ModelStore(tmp_path)
    publish_estimator(store, _fitted_lr(), name="m", features=FEATURES, promote=True)

    # Root ignores permission bits, so make the disk "full" where the artifact is written.
    import skops.io

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(skops.io, "dump", disk_full)
    with pytest.raises(PublishError, match="cannot write to the model store .*No space left"):
        publish_estimator(store, _fitted_lr(), name="m", features=FEATURES, promote=True)
    assert store.versions("m") == ["1"] and store.current("m") == "1"
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".staging")]


def test_both_stores_answer_every_call_of_the_store_interface():
    """The registry, CLI and publish call a Store without asking which one they hold: a
    call the directory store has and the S3 store lacks is an AttributeError on S3 only
    (the last-known-good ``verified`` pointer was one)."""
    import inspect

    from service.store_s3 import S3ModelStore
    from service.stores import Store

    wanted = {
        name for name, value in vars(Store).items()
        if callable(value) and not name.startswith("_")
    }  # fmt: skip
    assert {"verified", "mark_verified", "read_text", "write_text"} <= wanted
    for cls in (ModelStore, S3ModelStore):
        for name in sorted(wanted):
            method = getattr(cls, name, None)
            assert callable(method), f"{cls.__name__} has no {name}()"
            expected = list(inspect.signature(getattr(Store, name)).parameters)
            assert list(inspect.signature(method).parameters) == expected, (cls, name)


def test_a_forked_worker_makes_its_own_s3_client(monkeypatch):
    """A gunicorn worker forked from the master that preloaded the store must not read
    answers off the master's pooled S3 connections (they crossed between workers)."""
    import os

    from service.store_s3 import S3ModelStore

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = S3ModelStore("s3://bucket/models")
    parent = store.client
    assert store.client is parent  # one per process
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: say whether it got a new client, and leave at once
        try:
            fresh = store.client is not parent and store.client is store.client
            os.write(write, b"new" if fresh else b"inherited")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"new"
    assert store.client is parent  # the master keeps its own
    injected = S3ModelStore("s3://bucket/models", client=parent)
    assert injected.client is parent  # a client passed in is the caller's to manage
