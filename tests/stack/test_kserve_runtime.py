"""The KServe serving runtime's command against real gunicorn: a /mnt/models-shaped
directory (one model file, no manifest) is imported through the verifying publish path
and served under the InferenceService's name; an unsigned pickle is refused unread
(a marker file proves no code ran) unless the runtime is told otherwise.

The arguments are the ones k8s/kserve/cluster-serving-runtime.yaml passes.
"""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import joblib
import numpy as np
import pytest
import requests
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from tools.stack import VENV_BIN, Command, free_port, http_status, wait_until

PREDICTOR = str(VENV_BIN / "predictor")
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


class _WritesMarker:
    """Unpickling this runs code: it creates the marker file (and is no model)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (Path.touch, (self.marker,))


def _iris() -> tuple[np.ndarray, np.ndarray]:
    data = load_iris()
    return data.data, data.target


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTOR_")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (tmp_path / "metrics").mkdir(exist_ok=True)
    env.update(
        HOME=str(home),
        TMPDIR=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        PREDICTOR_WORKERS="2",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def _args(model_dir: Path, name: str, port: int, grpc_port: int = 0) -> list[str]:
    return [
        PREDICTOR, "kserve", f"--model_name={name}", f"--model_dir={model_dir}",
        f"--http_port={port}", f"--grpc_port={grpc_port}", "--host=127.0.0.1",
    ]  # fmt: skip


def _serve(
    tmp_path: Path, model_dir: Path, name: str, grpc_port: int = 0, **env: str
) -> tuple[Command, str]:
    port = free_port()
    server = Command(tmp_path / "run", "kserve", _args(model_dir, name, port, grpc_port))
    server.env = _env(tmp_path, **env)  # only the given settings, none of the caller's
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_status(url + "/readyz") == 200, 120, f"{url}/readyz", server.alive)
    except Exception:
        server.kill()
        raise AssertionError(server.log_tail(40)) from None
    return server, url


def _grpc_infer_matches(address: str, name: str, expected: list) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(address)
    try:
        wait_until(lambda: _grpc_ready(client, name), 60, f"gRPC {address} ready")
        tensor = grpcclient.InferInput("input-0", [len(ROWS), 4], "FP64")
        tensor.set_data_from_numpy(np.array(ROWS, dtype=np.float64))
        result = client.infer(name, [tensor], outputs=[grpcclient.InferRequestedOutput("predict")])
        assert result.as_numpy("predict").tolist() == expected
    finally:
        client.close()


def _grpc_ready(client, name: str) -> bool:  # noqa: ANN001 - tritonclient's client
    try:
        return client.is_model_ready(name)
    except Exception:  # noqa: BLE001 - not listening yet
        return False


def _refused(tmp_path: Path, model_dir: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _args(model_dir, "sklearn-iris", free_port()), env=_env(tmp_path, **env),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_skops_model_directory_serves_under_the_inference_service_name(tmp_path):
    X, y = _iris()
    model = LogisticRegression(max_iter=500).fit(X, y)
    model_dir = tmp_path / "mnt-models"
    model_dir.mkdir()
    sio.dump(model, model_dir / "model.skops")
    grpc_port = free_port()
    server, url = _serve(tmp_path, model_dir, "sklearn-iris", grpc_port=grpc_port)
    try:
        expected = model.predict(np.array(ROWS)).tolist()
        # KServe V1, as KServe's own sklearn server is called.
        r = requests.post(f"{url}/v1/models/sklearn-iris:predict", json={"instances": ROWS})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == expected
        assert r.json()["version"] == "1"
        # Open Inference Protocol (V2): one FP64 tensor of rows.
        body = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64",
                            "data": sum(ROWS, [])}]}  # fmt: skip
        r = requests.post(f"{url}/v2/models/sklearn-iris/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == expected
        assert requests.get(f"{url}/v2/models/sklearn-iris/ready").status_code == 200
        # grpc-v2: a stock tritonclient.grpc on --grpc_port.
        _grpc_infer_matches(f"127.0.0.1:{grpc_port}", "sklearn-iris", expected)
        # The default model of the seed route is the InferenceService's too.
        r = requests.post(f"{url}/predict", json={"input": ROWS[0]})
        assert r.json()["model"] == "sklearn-iris"
        meta = requests.get(f"{url}/v1/models/sklearn-iris").json()
        assert "KServe" in str(meta)
        # Positional features: KServe instances are rows in the model's order.
        assert "x0" in str(meta) and "x3" in str(meta)
        # Bad input is still a clear 4xx naming what was expected.
        r = requests.post(f"{url}/v1/models/sklearn-iris:predict", json={"instances": [[1, 2]]})
        assert r.status_code == 400 and "expected 4 features" in r.text
    finally:
        server.stop()
    log = server.log_file.read_text()
    assert "serving" in log and "as sklearn-iris version 1" in log


def test_an_unsigned_pickle_is_refused_unread(tmp_path):
    marker = tmp_path / "code-ran"
    model_dir = tmp_path / "mnt-models"
    model_dir.mkdir()
    (model_dir / "model.pkl").write_bytes(pickle.dumps(_WritesMarker(marker)))
    proc = _refused(tmp_path, model_dir)
    assert proc.returncode == 1
    (line,) = [x for x in proc.stderr.splitlines() if "refused" in x]
    assert "model.pkl" in line and "PREDICTOR_ALLOW_UNSIGNED_PICKLE=true" in line
    assert "Traceback" not in proc.stderr
    assert not marker.exists(), "the pickle was loaded: its code ran"
    # The marker can tell: told to allow unsigned pickles, the same file does run.
    proc = _refused(tmp_path, model_dir, PREDICTOR_ALLOW_UNSIGNED_PICKLE="true")
    assert proc.returncode == 1, proc.stderr
    assert marker.exists()
    assert "not a scikit-learn estimator" in proc.stderr


def test_a_joblib_pickle_serves_when_the_runtime_allows_unsigned_pickles(tmp_path):
    X, y = _iris()
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    model_dir = tmp_path / "mnt-models"
    model_dir.mkdir()
    joblib.dump(model, model_dir / "model.joblib")
    server, url = _serve(tmp_path, model_dir, "iris-forest", PREDICTOR_ALLOW_UNSIGNED_PICKLE="true")
    try:
        r = requests.post(f"{url}/v1/models/iris-forest:predict", json={"instances": ROWS})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == model.predict(np.array(ROWS)).tolist()
    finally:
        server.stop()
    assert "loading the unsigned pickle" in server.log_file.read_text()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ((), "no model file"),
        (("model.joblib", "model.skops"), "more than one model file"),
    ],
)
def test_a_model_directory_without_exactly_one_model_file_is_refused(tmp_path, files, expected):
    model_dir = tmp_path / "mnt-models"
    model_dir.mkdir()
    (model_dir / "README").write_text("not a model")
    for name in files:
        (model_dir / name).write_bytes(b"x")
    proc = _refused(tmp_path, model_dir)
    assert proc.returncode == 1
    assert expected in proc.stderr and "Traceback" not in proc.stderr
