"""A stock Open Inference Protocol client (tritonclient[http]) against the real gunicorn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests import helpers
from tests.helpers import IRIS_FEATURES
from tests.v2_server import ADMIN_TOKEN, shared_server

IRIS_ROWS = np.array(helpers.IRIS_ROWS, dtype=np.float32)
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]  # unambiguous for any fitted model


def predicted(result) -> list[str]:  # noqa: ANN001 - tritonclient's InferResult
    """The ``predict`` output: iris's classes are strings, so a BYTES tensor."""
    return [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict").tolist()]


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def server(demo_store):
    return shared_server(demo_store)


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(server.address, connection_timeout=10, network_timeout=10)
    yield c
    c.close()


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "predictor"
    assert "model_repository" in meta["extensions"]
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata(client):
    meta = client.get_model_metadata("iris")
    assert meta["name"] == "iris" and meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == IRIS_FEATURES
    assert all(i["shape"] == [-1] and i["datatype"] == "FP64" for i in meta["inputs"])
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["predict"] == {"name": "predict", "datatype": "BYTES", "shape": [-1]}
    assert outputs["predict_proba"]["shape"] == [-1, 3]
    assert meta["parameters"]["labels"] == ["setosa", "versicolor", "virginica"]
    assert client.get_model_metadata("iris", "1")["versions"] == ["1"]
    assert client.is_model_ready("iris") and client.is_model_ready("iris", "1")
    assert not client.is_model_ready("no-such-model")


def _matrix_input(binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("input-0", list(IRIS_ROWS.shape), "FP32")
    tensor.set_data_from_numpy(IRIS_ROWS, binary_data=binary)
    return tensor


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_matrix(client, binary):
    outputs = [
        httpclient.InferRequestedOutput("predict", binary_data=binary),
        httpclient.InferRequestedOutput("predict_proba", binary_data=binary),
    ]
    result = client.infer("iris", [_matrix_input(binary)], outputs=outputs, request_id="req-42")
    response = result.get_response()
    assert response["id"] == "req-42"
    assert response["model_name"] == "iris" and response["model_version"] == "1"
    for out in response["outputs"]:  # binary outputs really came as raw bytes
        assert ("data" in out) is not binary
    proba = result.as_numpy("predict_proba")
    assert predicted(result) == IRIS_CLASSES
    assert proba.shape == (3, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)
    assert proba.argmax(axis=1).tolist() == [0, 1, 2]


def test_infer_default_outputs_binary(client):
    """No outputs named: tritonclient asks for binary_data_output; `predict` comes back."""
    result = client.infer("iris", [_matrix_input(True)], model_version="1")
    assert predicted(result) == IRIS_CLASSES
    assert result.as_numpy("predict_proba") is None


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_one_tensor_per_feature(client, binary):
    inputs = []
    for j, name in enumerate(IRIS_FEATURES):
        tensor = httpclient.InferInput(name, [len(IRIS_ROWS)], "FP64")
        tensor.set_data_from_numpy(IRIS_ROWS[:, j].astype(np.float64), binary_data=binary)
        inputs.append(tensor)
    result = client.infer(
        "iris-rf", inputs, outputs=[httpclient.InferRequestedOutput("predict", binary)]
    )
    assert predicted(result) == IRIS_CLASSES


def test_regressor_agrees_with_v1(client, server):
    rows = np.array(
        [[0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.002, 0.02, -0.02], [0.0] * 10]
    )
    tensor = httpclient.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, binary_data=True)
    result = client.infer("diabetes", [tensor])
    v1 = requests.post(
        f"{server.url}/v1/models/diabetes:predict", json={"instances": rows.tolist()}, timeout=10
    ).json()
    np.testing.assert_allclose(result.as_numpy("predict"), v1["predictions"], rtol=1e-12)


def test_errors_reach_the_client_as_v2_errors(client):
    with pytest.raises(InferenceServerException) as info:
        client.infer("no-such-model", [_matrix_input(False)])
    assert info.value.status() == "404" and "no-such-model" in info.value.message()
    wrong = httpclient.InferInput("input-0", [3, 3], "FP32")
    wrong.set_data_from_numpy(IRIS_ROWS[:, :3].copy(), binary_data=True)
    with pytest.raises(InferenceServerException) as info:
        client.infer("iris", [wrong])
    assert info.value.status() == "400" and "expected shape [N, 4]" in info.value.message()


def test_repository_needs_the_token(client):
    with pytest.raises(InferenceServerException) as info:
        client.get_model_repository_index()
    assert info.value.status() == "401"
    with pytest.raises(InferenceServerException) as info:
        client.unload_model("iris", headers={"Authorization": "Bearer wrong-token"})
    assert info.value.status() == "403"
    assert client.is_model_ready("iris")


def test_repository_unload_and_load_reach_every_worker(client, server):
    index = client.get_model_repository_index(headers=ADMIN)
    assert {m["name"]: m["state"] for m in index} == {
        "diabetes": "READY",
        "iris": "READY",
        "iris-rf": "READY",
    }
    assert len(server.worker_pids()) == 2
    client.unload_model("iris", headers=ADMIN)
    shared = server.metrics_dir / "repository-state.json"  # what every worker applies
    assert json.loads(shared.read_text()) == {"unloaded": ["iris"], "pinned": []}
    try:
        # Several calls: with 2 workers, each is likely answered by both at least once.
        for _ in range(8):
            states = {m["name"]: m for m in client.get_model_repository_index(headers=ADMIN)}
            assert states["iris"]["state"] == "UNAVAILABLE"
            assert states["iris"]["reason"] == "unloaded"
            assert not client.is_model_ready("iris")
            assert client.is_model_ready("iris-rf")
        with pytest.raises(InferenceServerException) as info:
            client.infer("iris", [_matrix_input(False)])
        assert info.value.status() == "503"
    finally:
        client.load_model("iris", headers=ADMIN)
    assert json.loads(shared.read_text()) == {"unloaded": [], "pinned": []}
    for _ in range(8):
        assert client.is_model_ready("iris")
        result = client.infer("iris", [_matrix_input(True)])
        assert predicted(result) == IRIS_CLASSES
