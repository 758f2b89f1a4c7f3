"""The model store on the S3 API, against a real SeaweedFS server (tools/stack.SeaweedFS).

Only PREDICTOR_MODEL_STORE=s3://... and the standard AWS variables are given: the
CLI publishes, lists, promotes and rolls back; digests and signatures are checked
as for a directory; 50 concurrent promotions lose none; no local "s3:" directory
ever appears.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.errors import ArtifactRejected, PredictorError
from service.settings import Settings
from service.store_s3 import S3ModelStore
from service.stores import open_store

REPO = Path(__file__).resolve().parents[2]
PREDICTOR = str(Path(sys.executable).with_name("predictor"))
KEY = "s3-test-signing-key-0123456789abcdef"  # 32+ bytes: shorter keys stop the service


def cli(env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ["PATH"], "HOME": str(cwd), **env, "PREDICTOR_SIGNING_KEY": KEY}
    return subprocess.run(
        [PREDICTOR, *args], capture_output=True, text=True, timeout=300, env=full, cwd=cwd
    )


def no_s3_dirs(*roots: Path) -> None:
    for root in roots:
        found = [p for p in root.rglob("s3:*")]
        assert not found, f"a local directory was created for an S3 URI: {found}"


def test_settings_keep_an_s3_uri_whole():
    settings = Settings(MODEL_STORE="s3://bucket/some/prefix")
    assert settings.MODEL_STORE == "s3://bucket/some/prefix"
    assert isinstance(open_store(settings.MODEL_STORE), S3ModelStore)
    with pytest.raises(ValueError, match="expected a directory or s3://"):
        Settings(MODEL_STORE="gs://bucket/x")


def test_cli_publishes_lists_promotes_and_rolls_back_on_s3(s3_env, tmp_path):
    result = cli(s3_env, tmp_path, "train-demo")
    assert result.returncode == 0, result.stderr
    assert "published iris version 1" in result.stdout

    listed = cli(s3_env, tmp_path, "models", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {(r["name"], r["version"], r["current"]) for r in rows} >= {
        ("iris", "1", True), ("iris-rf", "1", True), ("diabetes", "1", True),
    }  # fmt: skip

    store = S3ModelStore(s3_env["PREDICTOR_MODEL_STORE"], cache_dir=tmp_path / "cache")
    # A second iris version through the Python API, by URI.
    from service.publish import publish_estimator

    estimator = _iris_estimator()
    manifest = publish_estimator(
        s3_env["PREDICTOR_MODEL_STORE"], estimator, name="iris", signing_key=KEY.encode(),
        compile_graph=False,
    )  # fmt: skip
    assert manifest.version == "2" and store.versions("iris") == ["1", "2"]
    assert store.current("iris") == "1"  # published, not promoted

    promoted = cli(s3_env, tmp_path, "promote", "iris", "2")
    assert promoted.returncode == 0, promoted.stderr
    assert S3ModelStore(store.uri).current("iris") == "2"
    back = cli(s3_env, tmp_path, "rollback", "iris")
    assert back.returncode == 0 and "from version 2 to 1" in back.stdout, back.stderr
    fresh = S3ModelStore(store.uri)
    assert fresh.current("iris") == "1" and fresh.history("iris") == ["1"]

    again = cli(s3_env, tmp_path, "rollback", "iris")
    assert again.returncode == 1 and "no earlier version" in again.stderr
    unknown = cli(s3_env, tmp_path, "promote", "iris", "9")
    assert unknown.returncode == 1 and "has no version '9'" in unknown.stderr
    no_s3_dirs(tmp_path, REPO)


def test_a_version_is_never_overwritten_and_its_manifest_lands_last(s3_env, tmp_path):
    uri = s3_env["PREDICTOR_MODEL_STORE"]
    store = S3ModelStore(uri, cache_dir=tmp_path / "cache")
    from service.publish import PublishError, publish_estimator

    publish_estimator(store, _iris_estimator(), name="m", version="1", compile_graph=False)
    with pytest.raises(PublishError, match="already exists"):
        publish_estimator(store, _iris_estimator(), name="m", version="1", compile_graph=False)
    # The upload order: the manifest's object is the newest in the version's prefix.
    client = store.client
    objects = client.list_objects_v2(Bucket=store.bucket, Prefix=store._key("m", "1", ""))
    newest = max(objects["Contents"], key=lambda o: o["LastModified"])
    assert newest["Key"].endswith("/manifest.json") or len(objects["Contents"]) == 2


def test_the_local_copy_is_digest_checked_and_signed_artifacts_verified(s3_env, tmp_path):
    uri = s3_env["PREDICTOR_MODEL_STORE"]
    store = S3ModelStore(uri, cache_dir=tmp_path / "cache")
    from service.publish import publish_estimator

    m = publish_estimator(
        store, _iris_estimator(), name="m", version="1", artifact_format="joblib",
        signing_key=KEY.encode(), compile_graph=False,
    )  # fmt: skip
    # Someone replaces the artifact in the bucket: the fetch refuses the copy.
    store.client.put_object(
        Bucket=store.bucket, Key=store._key("m", "1", m.artifact), Body=b"not the model"
    )
    with pytest.raises(ArtifactRejected, match="does not match the manifest"):
        S3ModelStore(uri, cache_dir=tmp_path / "other-cache").version_dir("m", "1")
    assert not list((tmp_path / "other-cache").glob("m/1-*"))  # no copy of version 1 kept

    # The untouched version loads only with the publisher's key (pickle: signed or nothing).
    n = publish_estimator(
        store, _iris_estimator(), name="n", version="1", artifact_format="joblib",
        signing_key=KEY.encode(), compile_graph=False,
    )  # fmt: skip
    from service.artifacts import load_estimator

    local = store.version_dir("n", "1")
    assert (local / n.artifact).is_file()
    assert load_estimator(local, store.manifest("n", "1"), KEY.encode()) is not None
    with pytest.raises(ArtifactRejected, match="signature"):
        load_estimator(local, store.manifest("n", "1"), b"another key")


def test_a_bucket_published_again_is_never_answered_from_the_old_copy(s3_env, tmp_path):
    """Versions are immutable inside one bucket's life, not across it: emptied and
    published again under the same URI (same key), version 1 is another model, and a
    worker whose cache holds the old version 1 must load the new one, not the copy."""
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    from service.models.loading import load_model
    from service.publish import publish_estimator

    uri = s3_env["PREDICTOR_MODEL_STORE"]
    cache = tmp_path / "cache"  # one worker's cache, as default_cache_dir(uri) would be
    settings = Settings(MODEL_STORE=uri, SIGNING_KEY=KEY)
    X, y = load_iris(return_X_y=True, as_frame=True)
    publish_estimator(
        uri, _iris_estimator(), name="again", signing_key=KEY.encode(), promote=True,
        compile_graph=False,
    )  # fmt: skip
    first = load_model(S3ModelStore(uri, cache_dir=cache), "again", "1", settings)
    assert first.manifest.estimator == "LogisticRegression"

    store = S3ModelStore(uri, cache_dir=tmp_path / "publisher-cache")
    listed = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store._key("again", ""))
    for obj in listed["Contents"]:
        store.client.delete_object(Bucket=store.bucket, Key=obj["Key"])
    tree = DecisionTreeClassifier(max_depth=1, random_state=0).fit(X, y)
    publish_estimator(
        uri, tree, name="again", signing_key=KEY.encode(), promote=True, compile_graph=False,
    )  # fmt: skip

    second = load_model(S3ModelStore(uri, cache_dir=cache), "again", "1", settings)
    assert second.manifest.estimator == "DecisionTreeClassifier"
    rows = X.iloc[::25]
    predicted, _ = second.runtime.run(rows.to_numpy(), with_proba=False)
    assert list(predicted) == list(tree.predict(rows))


def test_the_last_known_good_pointer_lives_beside_current_on_s3(s3_env, tmp_path):
    """What a worker records after first serving a version (the directory store's
    ``verified`` file) exists on S3 too: a restart refused a new version falls back to it."""
    uri = s3_env["PREDICTOR_MODEL_STORE"]
    store = S3ModelStore(uri, cache_dir=tmp_path / "cache")
    from service.publish import publish_estimator

    publish_estimator(store, _iris_estimator(), name="lkg", compile_graph=False, promote=True)
    assert store.verified("lkg") is None
    assert store.mark_verified("lkg", "1") is True
    assert S3ModelStore(uri, cache_dir=tmp_path / "c2").verified("lkg") == "1"
    store.write_text("lkg", "verified", "7\n")  # a version that does not exist is not usable
    assert S3ModelStore(uri, cache_dir=tmp_path / "c3").verified("lkg") is None


def test_fifty_concurrent_promotes_lose_no_update(s3_env, tmp_path):
    uri = s3_env["PREDICTOR_MODEL_STORE"]
    store = S3ModelStore(uri, cache_dir=tmp_path / "cache")
    from service.publish import publish_estimator

    for version in ("1", "2"):
        publish_estimator(store, _iris_estimator(), name="m", version=version, compile_graph=False)

    def promote(i: int) -> None:
        S3ModelStore(uri, cache_dir=tmp_path / "cache").promote("m", "1" if i % 2 else "2")

    with ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(promote, range(50)))
    final = S3ModelStore(uri)
    history = final.history("m")
    assert len(history) == 50, f"{50 - len(history)} promotions lost"
    assert sorted(history).count("1") == 25
    assert final.current("m") == history[-1]


def test_an_unreachable_store_answers_what_it_last_saw_and_counts_it(s3_env, tmp_path):
    from service import metrics

    store = S3ModelStore(s3_env["PREDICTOR_MODEL_STORE"], cache_dir=tmp_path / "cache")
    from service.publish import publish_estimator

    publish_estimator(store, _iris_estimator(), name="m", promote=True, compile_graph=False)
    assert store.names() == ["m"] and store.current("m") == "1"
    # Point the same store at a port nothing listens on: the answers stay, errors count.
    from tools.stack import free_port

    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    store._client = None
    store._seen = {k: (0.0, v) for k, (_, v) in store._seen.items()}  # expire the TTL
    before = _store_errors(metrics)
    assert store.names() == ["m"] and store.current("m") == "1"
    # One failed call, then answers from memory for RETRY_SECONDS (no timeout per read).
    assert _store_errors(metrics) >= before + 1
    with pytest.raises(PredictorError) as info:
        store.promote("m", "1")
    assert info.value.status == 503


def _store_errors(metrics) -> float:  # noqa: ANN001
    from prometheus_client import REGISTRY

    total = 0.0
    for family in REGISTRY.collect():
        if family.name == "predictor_store_errors":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


def _iris_estimator():  # noqa: ANN202
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    return LogisticRegression(max_iter=300).fit(X, y)


def test_a_users_pipeline_served_from_s3_answers_what_predict_answers(
    s3_env, tmp_path, monkeypatch
):
    """The S3 path with a data scientist's own model, not iris: a DataFrame Pipeline with
    string and number columns, string classes and gaps, published from its data into the
    bucket, fetched into a worker's cache, asked with missing values on every protocol."""
    import numpy as np

    from service import verification_data
    from service.app import create_app
    from service.publish import publish_model
    from tests.app import protocols
    from tests.helpers import mixed, onehot_pipeline

    monkeypatch.setattr(verification_data, "SYNTHETIC_ROWS", 5_000)  # not this test's business
    uri = s3_env["PREDICTOR_MODEL_STORE"]
    frame = mixed("str")
    X = frame.drop(columns="target")
    estimator = onehot_pipeline().fit(X, frame["target"])
    publish_model(estimator, name="accounts", data=frame, target="target", store=uri,
                  signing_key=KEY.encode(), promote=True)  # fmt: skip

    app = create_app(Settings(MODEL_STORE=uri, SIGNING_KEY=KEY, STORE_CACHE_DIR=tmp_path / "c"))
    asked = X.iloc[::10]
    rows = [[None if isinstance(v, float) and np.isnan(v) else v for v in row]
            for row in asked.astype(object).values.tolist()]  # fmt: skip
    assert any(None in row for row in rows)
    expected = estimator.predict(asked).tolist()
    assert set(expected) == {"yes", "no"}  # a model answering one class would not pass
    with app.test_client() as client:
        features = client.get("/v1/models/accounts").get_json()["features"]
        names = [f["name"] for f in features]
        answers = {
            "seed": protocols.seed(client, "accounts", rows),
            "v1 named": protocols.v1_named(client, "accounts", rows, names),
            "v2": protocols.v2(client, "accounts", rows, features, with_proba=True),
        }
    classes = estimator.classes_.tolist()
    for protocol, (predictions, proba) in answers.items():
        assert predictions == expected, protocol
        if isinstance(proba[0], dict):  # the seed route names each class
            proba = [[row[c] for c in classes] for row in proba]
        proba = np.asarray(proba, dtype=float).reshape(len(rows), len(classes))
        assert np.allclose(proba, estimator.predict_proba(asked), atol=1e-6), protocol
    assert list(S3ModelStore(uri, cache_dir=tmp_path / "c").version_dir("accounts", "1").iterdir())
