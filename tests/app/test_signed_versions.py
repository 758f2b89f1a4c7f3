"""The signature covers the whole manifest and every file: a changed version never serves."""

from __future__ import annotations

import json

import pytest

from service.app import create_app
from service.artifacts import verify_version
from service.errors import ArtifactRejected
from service.manifest import Manifest
from service.settings import Settings
from service.store import ModelStore
from tests.conftest import IRIS_ROW, TEST_SIGNING_KEY
from tools.attacks import copy_version, tamper

LABELS = ["setosa", "versicolor", "virginica"]


def _swap_features(m: Manifest) -> dict:
    features = [f.model_dump(mode="json", exclude_none=True) for f in m.features]
    return {"features": [features[1], features[0], *features[2:]]}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda m: {"output_labels": ["virginica", "versicolor", "setosa"]}, "bad_signature"),
        (_swap_features, "bad_signature"),
        (lambda m: {"classes": [2, 1, 0]}, "bad_signature"),
        (lambda m: {"task": "regression"}, "bad_signature"),
        (lambda m: {"sample_input": [[0, 0, 0, 0]]}, "bad_signature"),
        (lambda m: {"trusted_types": ["mypkg.Anything"]}, "bad_signature"),
        (lambda m: {"description": "changed"}, "bad_signature"),
        (lambda m: {"metrics": {"accuracy": 1.0}}, "bad_signature"),
        (lambda m: {"new_field": True}, "bad_signature"),
        (lambda m: {"files": {}}, "bad_signature"),
    ],
    ids=[
        "labels swapped", "feature order swapped", "classes", "task", "sample input",
        "trusted types", "description", "metrics", "added field", "file digests dropped",
    ],
)  # fmt: skip
def test_tampered_signed_manifest_is_refused_and_v1_keeps_serving(store_dir, change, reason):
    store = ModelStore(store_dir)
    app = create_app(Settings(MODEL_STORE=store_dir))
    client = app.test_client()
    directory = copy_version(store, "iris", "1", "2")
    tamper(directory, version="2")
    _resign(directory)  # v2 as the publisher signed it; then one field changes, signature kept
    assert verify_version(directory, Manifest.read(directory), TEST_SIGNING_KEY)
    tamper(directory, **change(Manifest.read(directory)))
    assert _reason(directory) == reason
    store.promote("iris", "2")
    app.extensions["predictor"].registry.refresh()
    body = client.post("/predict", json={"input": IRIS_ROW}).get_json()
    assert (body["version"], body["prediction"]) == ("1", ["setosa"])
    meta = client.get("/v1/models/iris").get_json()
    assert meta["refused"]["version"] == "2" and reason in meta["refused"]["reason"]
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("what", ["extra file", "file removed", "file changed", "symlink"])
def test_every_file_of_a_signed_version_is_covered(store, what):
    directory = copy_version(store, "iris", "1", "2")
    tamper(directory, version="2")
    _resign(directory)
    graph = directory / "model.onnx"
    if what == "extra file":
        (directory / "notes.txt").write_text("hello")
        expected = "unexpected_file"
    elif what == "file removed":
        graph.unlink()
        expected = "missing_artifact"
    elif what == "file changed":
        graph.write_bytes(graph.read_bytes() + b"\0")
        expected = "digest_mismatch"
    else:
        (directory / "link").symlink_to("/etc/passwd")
        expected = "bad_files"
    assert _reason(directory) == expected


def test_a_signed_version_copied_under_another_version_is_refused(store):
    """The version is part of what is signed: replaying v1 as v2 does not verify."""
    directory = copy_version(store, "iris", "1", "2")
    tamper(directory, version="2")
    assert _reason(directory) == "bad_signature"


def test_signature_is_stable_across_reading_and_new_default_fields(store):
    """What was signed at publish verifies after a JSON round trip (sorted keys, spaces)."""
    directory = store.version_dir("iris", "1")
    raw = json.loads((directory / "manifest.json").read_text())
    (directory / "manifest.json").write_text(json.dumps(raw, indent=7, sort_keys=True))
    assert verify_version(directory, Manifest.read(directory), TEST_SIGNING_KEY)


def _resign(directory) -> None:  # noqa: ANN001
    from service.signing import sign, version_files

    manifest = Manifest.read(directory)
    manifest.files = version_files(directory)
    manifest.signature = sign(TEST_SIGNING_KEY, manifest.signed_fields())
    manifest.write(directory)


def _reason(directory) -> str:  # noqa: ANN001
    with pytest.raises(ArtifactRejected) as err:
        verify_version(directory, Manifest.read(directory), TEST_SIGNING_KEY)
    return err.value.reason
