"""The stock tritonclient against the real gunicorn (2 workers): model config, the
statistics extension summed over workers, and InferenceServerException on every error."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tools.stack import Gunicorn

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float64)


@pytest.fixture(scope="module")
def server(demo_store, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("stats-run")
    gunicorn = Gunicorn(run_dir, demo_store, workers=2, name="gunicorn-stats").start()
    yield gunicorn
    gunicorn.stop()


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(server.address, connection_timeout=10, network_timeout=10)
    yield c
    c.close()


def _infer(client, rows=ROWS, model="iris"):
    tensor = httpclient.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, binary_data=True)
    return client.infer(model, [tensor])


def test_statistics_count_every_request_over_every_worker(client, server):
    before = client.get_inference_statistics("iris")["model_stats"]
    assert [(s["name"], s["version"]) for s in before] == [("iris", "1")]
    start = before[0]
    for _ in range(12):  # fresh connections each time spread over both workers
        _infer(client)
    with pytest.raises(InferenceServerException):
        _infer(client, ROWS[:, :3].copy())  # refused before the model runs: not counted
    after = client.get_inference_statistics("iris", "1")["model_stats"][0]
    assert (
        after["inference_stats"]["success"]["count"]
        == start["inference_stats"]["success"]["count"] + 12
    )
    assert after["inference_count"] == start["inference_count"] + 24  # rows
    assert after["inference_stats"]["success"]["ns"] > start["inference_stats"]["success"]["ns"]
    assert after["last_inference"] >= start["last_inference"] and after["last_inference"] > 0
    everything = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in everything} == {"iris", "iris-rf", "diabetes"}


def test_model_config(client):
    config = client.get_model_config("iris")
    assert config["name"] == "iris" and config["platform"] == "sklearn"
    assert [i["data_type"] for i in config["input"]] == ["TYPE_FP64"] * 4
    assert [o["name"] for o in config["output"]] == ["predict", "predict_proba"]
    assert client.get_model_config("iris", "1")["versions"] == ["1"]


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get_model_config("no-such-model"),
        lambda c: c.get_model_config("iris", "9"),
        lambda c: c.get_inference_statistics("no-such-model"),
        lambda c: c.get_inference_statistics("iris", "9"),
        lambda c: c.get_model_metadata("no-such-model"),
        lambda c: _infer(c, model="no-such-model"),
        lambda c: c.get_model_repository_index(),
        lambda c: c.load_model("iris"),
    ],
    ids=[
        "config",
        "config version",
        "stats",
        "stats version",
        "metadata",
        "infer",
        "index",
        "load",
    ],
)
def test_every_error_is_the_clients_own_exception(client, call):
    with pytest.raises(InferenceServerException) as info:
        call(client)
    assert info.value.status() in {"401", "403", "404"}
    assert "exception occurred in the client" not in info.value.message()
