"""Which runtime serves: the verified ONNX graph by default, scikit-learn on request or as
the fallback, and the same answers either way on every protocol."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from service.app import create_app
from service.publish import publish_estimator
from service.settings import Settings
from service.store import ModelStore
from tests.helpers import IRIS_ROW, RunsCode


def app_with(store_dir, **settings):
    return create_app(Settings(MODEL_STORE=store_dir, CACHE_ENABLED=False, **settings))


def runtime_of(client, name: str) -> tuple[str, str]:
    meta = client.get(f"/v1/models/{name}").get_json()
    return meta["runtime"], meta["runtime_reason"]


def test_demo_models_serve_their_verified_graph(store_dir):
    client = app_with(store_dir).test_client()
    for name in ("iris", "iris-rf", "diabetes"):
        assert runtime_of(client, name) == ("onnx", "")
        compiled = client.get(f"/v1/models/{name}").get_json()["versions"][0]["compiled"]
        assert compiled["ok"] and compiled["mismatches"] == 0
        assert compiled["rows_checked"] >= 100_000


@pytest.mark.parametrize("name", ["iris", "iris-rf", "diabetes"])
def test_every_protocol_answers_the_same_with_either_runtime(store_dir, name):
    onnx = app_with(store_dir, RUNTIME="onnx").test_client()
    sklearn = app_with(store_dir, RUNTIME="sklearn").test_client()
    assert runtime_of(sklearn, name)[0] == "sklearn"
    manifest = ModelStore(store_dir).manifest(name, "1")
    low = np.array([f.minimum for f in manifest.features])
    high = np.array([f.maximum for f in manifest.features])
    rows = np.random.default_rng(1).uniform(low, high, size=(200, len(low))).tolist()
    v1 = {"instances": rows, "probabilities": manifest.task == "classification"}
    v2 = {"inputs": [{"name": "input-0", "shape": [200, len(low)], "datatype": "FP64",
                      "data": rows}]}  # fmt: skip
    answers = []
    for client in (onnx, sklearn):
        a = client.post(f"/v1/models/{name}:predict", json=v1).get_json()
        b = client.post("/predict", json={"input": rows, "model": name}).get_json()
        c = client.post(f"/v2/models/{name}/infer", json=v2).get_json()
        answers.append((a, b, c))
    (a1, b1, c1), (a2, b2, c2) = answers
    if manifest.task == "classification":
        assert a1["predictions"] == a2["predictions"] == b1["prediction"] == b2["prediction"]
        p1 = [list(p.values()) for p in a1["probabilities"]]
        p2 = [list(p.values()) for p in a2["probabilities"]]
        np.testing.assert_allclose(p1, p2, atol=1e-5)
    else:
        np.testing.assert_allclose(a1["predictions"], a2["predictions"], rtol=1e-5)
        np.testing.assert_allclose(b1["prediction"], b2["prediction"], rtol=1e-5)
    out1 = {o["name"]: o["data"] for o in c1["outputs"]}
    out2 = {o["name"]: o["data"] for o in c2["outputs"]}
    if manifest.task == "classification":  # the classes themselves, as V1 answers them
        assert out1["predict"] == out2["predict"] == a1["predictions"]
    else:
        np.testing.assert_allclose(out1["predict"], out2["predict"], rtol=1e-5)


def test_override_per_model_and_the_reason_is_reported(store_dir):
    app = app_with(store_dir, RUNTIME_OVERRIDES="iris=sklearn")
    client = app.test_client()
    assert runtime_of(client, "iris") == ("sklearn", "runtime sklearn chosen by settings")
    assert runtime_of(client, "iris-rf")[0] == "onnx"
    with pytest.raises(ValueError, match="expected model=auto|sklearn|onnx"):
        Settings(RUNTIME_OVERRIDES="iris=fast")


def test_unverifiable_model_falls_back_and_forced_onnx_refuses_it(store_dir):
    store = ModelStore(store_dir)
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    knn = KNeighborsClassifier(n_neighbors=5).fit(X, y)
    features = store.manifest("iris", "1").features
    manifest = publish_estimator(store, knn, name="iris", features=features, held_out=X,
                                 promote=True)  # fmt: skip
    client = app_with(store_dir).test_client()
    # k-NN graphs break distance ties differently: verification finds mismatches.
    assert manifest.compiled.ok is False and manifest.compiled.mismatches > 0
    runtime, reason = runtime_of(client, "iris")
    assert runtime == "sklearn" and "failed verification" in reason
    forced = app_with(store_dir, RUNTIME="onnx").test_client().get("/v1/models/iris")
    assert forced.get_json()["refused"]["reason"].startswith("no_compiled_graph")

    uncompiled = publish_estimator(store, knn, name="knn", features=manifest.features,
                                   compile_graph=False, promote=True)  # fmt: skip
    assert uncompiled.compiled is None
    meta = app_with(store_dir, RUNTIME="onnx").test_client().get("/v1/models/knn").get_json()
    assert meta["ready"] is False and "no compiled graph was published" in meta["refused"]["reason"]


def test_doctored_graph_is_refused_at_load_and_old_version_serves(store_dir):
    store = ModelStore(store_dir)
    from tests.conftest import TEST_SIGNING_KEY
    from tools.attacks import signed_copy

    signed_copy(store, "iris", "1", "2", TEST_SIGNING_KEY)  # v1 republished as v2, signed
    graph = store.version_dir("iris", "2") / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[-20] ^= 0xFF  # flip bits in the graph
    graph.write_bytes(bytes(data))
    app = app_with(store_dir)
    client = app.test_client()
    store.promote("iris", "2")
    app.extensions["predictor"].registry.refresh()
    meta = client.get("/v1/models/iris").get_json()
    assert meta["serving_version"] == "1" and meta["refused"]["reason"].startswith(
        "digest_mismatch"
    )
    assert client.post("/predict", json={"input": IRIS_ROW}).get_json()["version"] == "1"


def test_compiled_graph_serves_without_ever_unpickling(store_dir, tmp_path):
    """The graph serves and the estimator is never read; swapping the estimator artifact for
    a code-running pickle changes a signed file digest, so the version is refused and
    nothing runs."""
    import pickle

    client = app_with(store_dir).test_client()
    assert runtime_of(client, "iris")[0] == "onnx"
    marker = tmp_path / "pwned"
    directory = ModelStore(store_dir).version_dir("iris", "1")
    (directory / "model.skops").write_bytes(pickle.dumps(RunsCode(marker)))
    client = app_with(store_dir).test_client()
    meta = client.get("/v1/models/iris").get_json()
    assert meta["ready"] is False and meta["refused"]["reason"].startswith("digest_mismatch")
    assert not marker.exists()
