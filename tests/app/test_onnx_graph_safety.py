"""ONNX graphs that reach outside themselves are refused at publish and at load (finding 10).

An initializer stored as external data makes onnxruntime read a file the graph
names (relative to the working directory when loaded from bytes) and serve it as
coefficients; foreign operator domains reach code no published graph needs.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from sklearn.linear_model import LogisticRegression

from service.app import create_app
from service.errors import ArtifactRejected
from service.runtimes.onnx import compile as onnx_compile
from service.runtimes.onnx.safety import check_graph, graph_problems
from service.settings import Settings
from service.signing import file_sha256
from service.state import state
from service.store import ModelStore

from ..helpers import IRIS_ROW, resign


def _graph(store: ModelStore) -> onnx.ModelProto:
    manifest = store.manifest("iris", "1")
    return onnx.load_from_string((store.version_dir("iris", "1") / manifest.compiled.artifact)
                                 .read_bytes())  # fmt: skip


def _external(model: onnx.ModelProto) -> onnx.ModelProto:
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.ClearField("double_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="manifest.json")
    return model


def _foreign_domain(model: onnx.ModelProto) -> onnx.ModelProto:
    model.opset_import.add(domain="com.microsoft", version=1)
    model.graph.node[0].domain = "com.microsoft"
    return model


EVIL = {
    "external data": (_external, "reads external data from 'manifest.json'"),
    "foreign domain": (_foreign_domain, "domain 'com.microsoft'"),
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_unsafe_graph_is_refused_at_load_and_v1_keeps_serving(store, case):
    make, reason = EVIL[case]
    good = _graph(store)
    assert graph_problems(good.SerializeToString()) == []  # what publish makes passes
    evil = make(good).SerializeToString()
    with pytest.raises(ArtifactRejected) as err:
        check_graph(evil)
    assert err.value.reason == "unsafe_graph" and reason in str(err.value)

    app = create_app(Settings(MODEL_STORE=store.root, RUNTIME="onnx"))
    client = app.test_client()
    planted = store.version_dir("iris", "2")
    source = store.version_dir("iris", "1")
    planted.mkdir()
    fields = json.loads((source / "manifest.json").read_text())
    for path in source.iterdir():
        if path.name != "manifest.json":
            (planted / path.name).write_bytes(path.read_bytes())
    graph = planted / fields["compiled"]["artifact"]
    graph.write_bytes(evil)
    fields["version"] = "2"
    fields["compiled"]["sha256"] = file_sha256(graph)
    (planted / "manifest.json").write_text(json.dumps(fields))
    resign(planted)  # signed like a publisher would: only the graph itself is unsafe
    store.promote("iris", "2")

    registry = state(app).registry
    registry.refresh()
    refused = registry.refused("iris")
    assert refused is not None and refused[0] == "2" and "unsafe_graph" in refused[1]
    answer = client.post("/predict", json={"input": IRIS_ROW})
    assert answer.status_code == 200 and answer.get_json()["version"] == "1"


@pytest.mark.parametrize("case", sorted(EVIL))
def test_unsafe_graph_is_refused_at_publish(store, monkeypatch, case):
    make, reason = EVIL[case]
    evil = make(_graph(store)).SerializeToString()
    monkeypatch.setattr(onnx_compile, "convert", lambda *args, **kwargs: evil)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    estimator = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    features = [{"name": n, "type": "float"} for n in "abcd"]
    graph, verification = onnx_compile.compile_estimator(
        estimator, features, task="classification", sample_rows=X[:3].tolist(), random_rows=100
    )
    assert graph is None and not verification.ok
    assert "graph refused" in str(verification.reason) and reason in str(verification.reason)
