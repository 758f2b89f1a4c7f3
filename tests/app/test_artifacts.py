"""A tampered artifact is refused before it is deserialised, and its code never runs."""

from __future__ import annotations

import pickle

import pytest

from service.app import create_app
from service.artifacts import load_estimator
from service.errors import ArtifactRejected
from service.manifest import Manifest
from service.models.registry import ModelRegistry
from service.publish import publish_estimator
from service.settings import Settings
from service.store import ModelStore
from tests.helpers import IRIS_ROW, plant_pickle_bomb

KEY = b"test-signing-key"


@pytest.mark.parametrize(
    ("signing_key", "extra", "reason"),
    [
        (None, {}, "unsigned_pickle"),
        (KEY, {}, "unsigned"),
        (KEY, {"signature": "ab" * 32}, "bad_signature"),
    ],
)
def test_pickle_bomb_is_refused_and_never_runs(store, tmp_path, signing_key, extra, reason):
    marker = tmp_path / "pwned"
    directory = plant_pickle_bomb(store, "iris", "2", marker, **extra)
    with pytest.raises(ArtifactRejected) as err:
        load_estimator(directory, Manifest.read(directory), signing_key)
    assert err.value.reason == reason
    assert not marker.exists()
    # Sanity: the payload is real — unpickling it does create the marker.
    pickle.loads((directory / "model.joblib").read_bytes())
    assert marker.exists()


def test_promoted_pickle_bomb_is_refused_while_old_version_serves(store_dir, tmp_path):
    app = create_app(Settings(MODEL_STORE=store_dir))
    client = app.test_client()
    store = ModelStore(store_dir)
    marker = tmp_path / "pwned"
    plant_pickle_bomb(store, "iris", "2", marker)
    store.promote("iris", "2")
    registry: ModelRegistry = app.extensions["predictor"].registry
    registry.refresh()
    assert not marker.exists()
    body = client.post("/predict", json={"input": IRIS_ROW}).get_json()
    assert body["version"] == "1" and body["prediction"] == ["setosa"]
    meta = client.get("/v1/models/iris").get_json()
    assert meta["refused"]["version"] == "2" and "unsigned_pickle" in meta["refused"]["reason"]
    assert client.get("/readyz").status_code == 200


def test_digest_mismatch_is_refused(store):
    directory = store.version_dir("iris", "1")
    manifest = Manifest.read(directory)
    with open(directory / manifest.artifact, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactRejected) as err:
        load_estimator(directory, manifest, None)
    assert err.value.reason == "digest_mismatch" and "does not match" in str(err.value)


def test_signed_joblib_loads_and_a_resigned_manifest_does_not(tmp_path):
    from sklearn.linear_model import LogisticRegression

    from service.manifest import Feature

    store = ModelStore(tmp_path)
    estimator = LogisticRegression().fit([[0.0], [1.0], [0.1], [0.9]], [0, 1, 0, 1])
    manifest = publish_estimator(
        store, estimator, name="m", features=[Feature(name="x")], artifact_format="joblib",
        signing_key=KEY,
    )  # fmt: skip
    directory = store.version_dir("m", manifest.version)
    assert load_estimator(directory, Manifest.read(directory), KEY).predict([[1.0]])[0] == 1
    with pytest.raises(ArtifactRejected) as err:
        load_estimator(directory, Manifest.read(directory), b"another-key")
    assert err.value.reason == "bad_signature"
    with pytest.raises(ArtifactRejected) as err:
        load_estimator(directory, Manifest.read(directory), None)  # no key: pickle refused
    assert err.value.reason == "unsigned_pickle"


def test_skops_with_untrusted_type_is_refused(store):
    directory = store.version_dir("iris-rf", "1")
    manifest = Manifest.read(directory)
    assert manifest.trusted_types, "a random forest needs its tree type trusted"
    narrowed = manifest.model_copy(update={"trusted_types": []})
    with pytest.raises(ArtifactRejected) as err:
        load_estimator(directory, narrowed, None)
    assert err.value.reason == "untrusted_types" and "Tree" in str(err.value)
    widened = manifest.model_copy(
        update={"trusted_types": [*manifest.trusted_types, "posix.system"]}
    )
    with pytest.raises(ArtifactRejected, match="refusing to trust posix.system"):
        load_estimator(directory, widened, None)
