"""The Open Inference Protocol over gRPC, with the stock tritonclient.grpc, against the
gRPC server that the real gunicorn master starts beside its HTTP workers."""

from __future__ import annotations

import shutil
import signal
import threading
import time

import grpc
import numpy as np
import pandas as pd
import pytest
import requests
import tritonclient.grpc as grpcclient
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from service import verification_data
from service.manifest import Feature
from service.publish import publish_estimator, publish_model
from service.store import ModelStore
from tests.helpers import mixed, onehot_pipeline
from tools.stack import Gunicorn, free_port, wait_until

IRIS_ROWS = np.array(
    [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.7, 3.0, 5.2, 2.3]], dtype=np.float64
)
IRIS_FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
API_KEY = "grpc-test-key-0123456789abcdef0123456789"


def _plan_model() -> tuple[object, list[Feature]]:
    """A Pipeline over a string and a number column: the BYTES case."""
    frame = pd.DataFrame(
        {
            "plan": ["basic", "pro", "basic", "team", "pro", "team"] * 10,
            "spend": [10.0, 80.0, 15.0, 40.0, 90.0, 35.0] * 10,
        }
    )
    target = np.array(["stay", "leave", "stay", "leave", "leave", "stay"] * 10)
    pipe = make_pipeline(
        ColumnTransformer(
            [
                ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
                ("num", StandardScaler(), ["spend"]),
            ]
        ),
        LogisticRegression(),
    ).fit(frame, target)
    return pipe, [Feature(name="plan", type="string"), Feature(name="spend")]


USER_MODEL = "accounts"


@pytest.fixture(scope="module")
def user_model() -> tuple[object, pd.DataFrame]:
    """A user's DataFrame Pipeline: int and float columns, two string columns, string
    classes ("yes"/"no"), gaps in ``income`` and ``city``; fitted, with its features."""
    frame = mixed("str")
    X = frame.drop(columns="target")
    return onehot_pipeline().fit(X, frame["target"]), frame


@pytest.fixture(scope="module")
def store_dir(demo_store_template, tmp_path_factory, user_model):
    root = tmp_path_factory.mktemp("grpc") / "models"
    shutil.copytree(demo_store_template, root)
    pipe, features = _plan_model()
    iris = load_iris()
    publish_estimator(  # a family with no exact explainer: the explanation output is refused
        ModelStore(root), KNeighborsClassifier().fit(iris.data, iris.target), name="iris-knn",
        features=[Feature(name=n.replace(" ", "_")) for n in iris.feature_names],
        sample_input=iris.data[:3].tolist(), held_out=iris.data[::10], promote=True,
    )  # fmt: skip
    publish_estimator(
        ModelStore(root), pipe, name="plans", features=features,
        sample_input=[["basic", 12.0], ["pro", 85.0]], promote=True,
    )  # fmt: skip
    estimator, frame = user_model
    # Published as a user would, from the data alone (the compiled graph's verification
    # on fewer synthetic rows: the distribution checks are not this file's business).
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(verification_data, "SYNTHETIC_ROWS", 5_000)
        publish_model(
            estimator, name=USER_MODEL, data=frame, target="target", store=root, promote=True
        )
    return root


@pytest.fixture(scope="module")
def server(store_dir, tmp_path_factory):
    from service.auth import hash_key

    run = tmp_path_factory.mktemp("grpc-run")
    gunicorn = Gunicorn(
        run, store_dir, workers=1, inherit_settings=False, grpc_port=free_port(),
        env={"PREDICTOR_API_KEYS": f"tests:{hash_key(API_KEY)}"},
    )  # fmt: skip
    gunicorn.start()
    try:
        wait_until(lambda: _serving(gunicorn.grpc_address), 60, "the gRPC server answers ready")
        yield gunicorn
    finally:
        gunicorn.stop()


def _serving(address: str) -> bool:
    try:
        with grpcclient.InferenceServerClient(address) as c:
            return c.is_server_ready()
    except InferenceServerException:
        return False


@pytest.fixture(scope="module")
def client(server):
    c = grpcclient.InferenceServerClient(server.grpc_address)
    yield c
    c.close()


KEY = {"x-api-key": API_KEY}


def _rest_v2(server, model: str, body: dict) -> dict:
    r = requests.post(
        f"{server.url}/v2/models/{model}/infer", json=body, timeout=10,
        headers={"X-API-Key": API_KEY},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return {o["name"]: o for o in r.json()["outputs"]}


def _infer(client, model, inputs, outputs=("predict", "predict_proba"), **kw):
    wanted = [grpcclient.InferRequestedOutput(n) for n in outputs]
    return client.infer(model, inputs, outputs=wanted, headers=KEY, **kw)


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "predictor" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("iris", as_json=True)
    assert model["name"] == "iris" and model["versions"] == ["1"] and model["platform"] == "sklearn"
    assert [i["name"] for i in model["inputs"]] == IRIS_FEATURES
    assert {o["name"]: o["datatype"] for o in model["outputs"]} == {
        "predict": "BYTES",  # the model's own classes: species names
        "predict_proba": "FP64",
    }
    assert client.get_model_metadata("iris", "1", as_json=True)["versions"] == ["1"]
    assert client.is_model_ready("iris") and client.is_model_ready("iris", "1")


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "INT64"])
def test_matrix_infer_equals_rest(server, client, datatype):
    rows = IRIS_ROWS if datatype != "INT64" else np.rint(IRIS_ROWS)
    array = rows.astype({"FP64": np.float64, "FP32": np.float32, "INT64": np.int64}[datatype])
    tensor = grpcclient.InferInput("input-0", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    result = _infer(client, "iris", [tensor], request_id="req-7")
    rest = _rest_v2(
        server, "iris",
        {"inputs": [{"name": "input-0", "shape": list(array.shape), "datatype": datatype,
                     "data": array.tolist()}],
         "outputs": [{"name": "predict"}, {"name": "predict_proba"}]},
    )  # fmt: skip
    assert _decoded(result.as_numpy("predict")) == rest["predict"]["data"]
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (len(rows), 3)
    np.testing.assert_allclose(proba.ravel(), rest["predict_proba"]["data"], rtol=0, atol=1e-12)
    response = result.get_response(as_json=True)
    assert response["model_name"] == "iris" and response["model_version"] == "1"
    assert response["id"] == "req-7"


def test_per_feature_tensors(server, client):
    inputs = []
    for j, name in enumerate(IRIS_FEATURES):
        t = grpcclient.InferInput(name, [len(IRIS_ROWS)], "FP64")
        t.set_data_from_numpy(IRIS_ROWS[:, j].copy())
        inputs.append(t)
    result = _infer(client, "iris-rf", inputs, outputs=("predict",))
    rest = _rest_v2(
        server, "iris-rf",
        {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64",
                     "data": IRIS_ROWS.tolist()}]},
    )  # fmt: skip
    assert _decoded(result.as_numpy("predict")) == rest["predict"]["data"]


def test_bytes_string_feature(server, client):
    plan = grpcclient.InferInput("plan", [3], "BYTES")
    plan.set_data_from_numpy(np.array([b"basic", b"pro", b"team"], dtype=np.object_))
    spend = grpcclient.InferInput("spend", [3], "FP64")
    spend.set_data_from_numpy(np.array([12.0, 85.0, 40.0]))
    result = _infer(client, "plans", [plan, spend])
    rest = _rest_v2(
        server, "plans",
        {"inputs": [{"name": "plan", "shape": [3], "datatype": "BYTES",
                     "data": ["basic", "pro", "team"]},
                    {"name": "spend", "shape": [3], "datatype": "FP64",
                     "data": [12.0, 85.0, 40.0]}],
         "outputs": [{"name": "predict"}, {"name": "predict_proba"}]},
    )  # fmt: skip
    got = [v.decode() for v in result.as_numpy("predict").tolist()]
    assert got == rest["predict"]["data"]
    assert set(got) <= {"stay", "leave"}


def _user_inputs(client, rows: pd.DataFrame) -> list:
    """One tensor per feature, typed as the model metadata advertises: NaN for a missing
    number; BYTES for strings (the protocol's BYTES has no null element)."""
    meta = client.get_model_metadata(USER_MODEL, as_json=True)
    inputs = []
    for spec in meta["inputs"]:
        column = rows[spec["name"]]
        if spec["datatype"] == "BYTES":
            assert column.notna().all(), "a missing string has no BYTES encoding"
            data = np.array([str(v).encode() for v in column], dtype=np.object_)
        else:
            dtype = {"INT64": np.int64, "FP64": np.float64, "BOOL": np.bool_}[spec["datatype"]]
            data = column.to_numpy(dtype=dtype)
        tensor = grpcclient.InferInput(spec["name"], [len(rows)], spec["datatype"])
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def test_user_pipeline_answers_what_predict_answers(client, user_model):
    """A user's model over gRPC with the stock tritonclient: strings as BYTES, missing
    numbers as NaN; every class equals ``estimator.predict``, every probability
    ``predict_proba`` (1e-5: the compiled graph may serve it)."""
    estimator, frame = user_model
    meta = client.get_model_metadata(USER_MODEL, as_json=True)
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {
        "age": "INT64", "income": "FP64", "colour": "BYTES", "city": "BYTES",
    }  # fmt: skip
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {
        "predict": "BYTES",
        "predict_proba": "FP64",
    }
    X = frame.drop(columns="target")
    rng = np.random.default_rng(7)
    rows = X[X.city.notna()].iloc[rng.integers(0, int(X.city.notna().sum()), 300)]
    rows = rows.reset_index(drop=True)
    rows.loc[rng.random(len(rows)) < 0.15, "income"] = np.nan  # more gaps than the data's
    assert rows.income.isna().sum() >= 20

    result = _infer(client, USER_MODEL, _user_inputs(client, rows))
    got = _decoded(result.as_numpy("predict"))
    assert got == estimator.predict(rows).tolist()
    assert set(got) == {"yes", "no"}
    proba = result.as_numpy("predict_proba")
    np.testing.assert_allclose(proba, estimator.predict_proba(rows), rtol=0, atol=1e-5)

    only_predict = _infer(client, USER_MODEL, _user_inputs(client, rows), outputs=("predict",))
    assert _decoded(only_predict.as_numpy("predict")) == got
    assert only_predict.as_numpy("predict_proba") is None


def test_user_pipeline_names_a_string_feature_sent_as_numbers(client, user_model):
    _, frame = user_model
    rows = frame.drop(columns="target").dropna().head(3).reset_index(drop=True)
    inputs = _user_inputs(client, rows)
    colour = grpcclient.InferInput("colour", [3], "FP64")
    colour.set_data_from_numpy(np.array([1.0, 2.0, 3.0]))
    inputs = [colour if t.name() == "colour" else t for t in inputs]
    with pytest.raises(InferenceServerException) as err:
        _infer(client, USER_MODEL, inputs)
    assert "INVALID_ARGUMENT" in _status(err.value)
    assert 'feature "colour" is string; send BYTES' in err.value.message()
    assert client.is_model_ready(USER_MODEL)


def test_typed_contents_answer_typed(server):
    """A client that sends typed contents (no raw bytes) gets typed contents back.

    tritonclient's own generated stub, not ours: both define the protocol's messages
    and one process cannot load the two into protobuf's default pool."""
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="iris")
        tensor = request.inputs.add(name="x", datatype="FP64", shape=[3, 4])
        tensor.contents.fp64_contents.extend(IRIS_ROWS.ravel().tolist())
        request.outputs.add(name="predict")
        response = stub.ModelInfer(request, metadata=(("authorization", f"Bearer {API_KEY}"),))
    assert not response.raw_output_contents
    (out,) = response.outputs
    assert out.name == "predict" and out.datatype == "BYTES" and list(out.shape) == [3]
    rest = _rest_v2(
        server,
        "iris",
        {
            "inputs": [
                {"name": "x", "shape": [3, 4], "datatype": "FP64", "data": IRIS_ROWS.tolist()}
            ]
        },
    )
    assert [v.decode() for v in out.contents.bytes_contents] == rest["predict"]["data"]


def _decoded(array) -> list:  # noqa: ANN001 - BYTES outputs come back as bytes
    return [v.decode() if isinstance(v, bytes) else v for v in array.ravel().tolist()]


def _status(exc: InferenceServerException) -> str:
    return exc.status() or ""


@pytest.mark.parametrize(
    ("shape", "datatype", "status", "says"),
    [
        ([3, 3], "FP64", "INVALID_ARGUMENT", "expected"),
        ([3, 4], "BYTES", "INVALID_ARGUMENT", "datatype"),
    ],
)
def test_bad_request_is_invalid_argument_and_server_keeps_serving(
    client, shape, datatype, status, says
):
    if datatype == "BYTES":
        data = np.array([b"x"] * (shape[0] * shape[1]), dtype=np.object_).reshape(shape)
    else:
        data = np.ones(shape)
    tensor = grpcclient.InferInput("input-0", shape, datatype)
    tensor.set_data_from_numpy(data)
    with pytest.raises(InferenceServerException) as err:
        _infer(client, "iris", [tensor])
    assert status in _status(err.value) and says in err.value.message()
    assert client.is_server_ready()
    ok = grpcclient.InferInput("input-0", [1, 4], "FP64")
    ok.set_data_from_numpy(IRIS_ROWS[:1].copy())
    answer = _infer(client, "iris", [ok], outputs=("predict",)).as_numpy("predict")
    assert _decoded(answer) == ["setosa"]


def test_oversized_message_is_refused_and_server_keeps_serving(client):
    rows = np.ones((40_000, 4))  # 1.28 MB of raw FP64, above the 1 MiB body limit
    tensor = grpcclient.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    with pytest.raises(InferenceServerException) as err:
        _infer(client, "iris", [tensor])
    assert "RESOURCE_EXHAUSTED" in _status(err.value)
    assert client.is_server_ready()


def test_unknown_model_and_missing_key(client):
    tensor = grpcclient.InferInput("input-0", [1, 4], "FP64")
    tensor.set_data_from_numpy(IRIS_ROWS[:1].copy())
    with pytest.raises(InferenceServerException) as err:
        _infer(client, "no-such-model", [tensor])
    assert "NOT_FOUND" in _status(err.value) and "no-such-model" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("no-such-model")
    assert "NOT_FOUND" in _status(err.value)
    with pytest.raises(InferenceServerException) as err:
        client.infer("iris", [tensor])  # no API key
    assert "UNAUTHENTICATED" in _status(err.value)
    with pytest.raises(InferenceServerException) as err:
        client.infer("iris", [tensor], headers={"x-api-key": "wrong"})
    assert "UNAUTHENTICATED" in _status(err.value)


def test_explanation_output_through_tritonclient_equals_rest(server, client):
    """A stock tritonclient names the ``explanation`` output like any other: its BYTES
    elements are the JSON rows REST V2 answers, adding up to the predicted probability."""
    import json

    tensor = grpcclient.InferInput("input-0", list(IRIS_ROWS.shape), "FP64")
    tensor.set_data_from_numpy(IRIS_ROWS.astype(np.float64))
    result = _infer(
        client, "iris-rf", [tensor], outputs=("predict", "predict_proba", "explanation")
    )
    rows = [json.loads(v) for v in result.as_numpy("explanation")]
    proba = result.as_numpy("predict_proba")
    assert [r["prediction"] for r in rows] == [v.decode() for v in result.as_numpy("predict")]
    for row, p in zip(rows, proba, strict=True):
        assert abs(row["base_value"] + sum(row["contributions"]) - row["output"]) <= 1e-6
        assert abs(row["output"] - p.max()) <= 1e-6 and row["method"] == "tree_shap"
    body = {
        "inputs": [{"name": "input-0", "shape": list(IRIS_ROWS.shape), "datatype": "FP64",
                    "data": IRIS_ROWS.ravel().tolist()}],
        "outputs": [{"name": "explanation"}],
    }  # fmt: skip
    rest = [json.loads(e) for e in _rest_v2(server, "iris-rf", body)["explanation"]["data"]]
    assert rest == rows
    with pytest.raises(InferenceServerException) as refused:
        explanation = grpcclient.InferRequestedOutput("explanation")
        explanation._output.parameters["output_kind"].string_param = "log_odds"  # no API for it
        client.infer("iris-rf", [tensor], outputs=[explanation], headers=KEY)
    assert "available: ['probability']" in refused.value.message()


def test_explanation_output_parameters_and_refusals_over_raw_stubs(server):
    """The parameters tritonclient has no API for, through its generated stub: the default
    is the probability of the predicted class, ``output_kind=log_odds`` is honoured for a
    linear model, a bad kind is INVALID_ARGUMENT naming the choices, a family with no exact
    explainer is UNIMPLEMENTED naming it, and predict keeps serving after each."""
    import json

    def request(model: str, *outputs: tuple[str, dict[str, str]]) -> pb.ModelInferRequest:
        req = pb.ModelInferRequest(model_name=model)
        tensor = req.inputs.add(name="input-0", datatype="FP64", shape=list(IRIS_ROWS.shape))
        tensor.contents.fp64_contents.extend(IRIS_ROWS.ravel().tolist())
        for name, parameters in outputs:
            out = req.outputs.add(name=name)
            for key, value in parameters.items():
                out.parameters[key].string_param = value
        return req

    metadata = (("authorization", f"Bearer {API_KEY}"),)
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        answer = stub.ModelInfer(
            request("iris", ("predict", {}), ("predict_proba", {}), ("explanation", {})),
            metadata=metadata,
        )
        by_name = {o.name: o for o in answer.outputs}
        assert by_name["explanation"].datatype == "BYTES"
        predict = [v.decode() for v in by_name["predict"].contents.bytes_contents]
        proba = np.array(by_name["predict_proba"].contents.fp64_contents).reshape(len(predict), -1)
        rows = [json.loads(v) for v in by_name["explanation"].contents.bytes_contents]
        assert [r["prediction"] for r in rows] == predict
        for row, p in zip(rows, proba, strict=True):
            assert len(row["contributions"]) == len(row["features"]) == 4
            assert abs(row["base_value"] + sum(row["contributions"]) - row["output"]) <= 1e-6
            assert abs(row["output"] - p.max()) <= 1e-6
            assert row["method"] == "exact_shapley" and row["output_kind"] == "probability"

        answer = stub.ModelInfer(
            request("iris", ("explanation", {"output_kind": "log_odds"})), metadata=metadata
        )
        kinds = {json.loads(v)["output_kind"] for v in answer.outputs[0].contents.bytes_contents}
        assert kinds == {"log_odds"}

        with pytest.raises(grpc.RpcError) as bad:
            stub.ModelInfer(
                request("iris", ("explanation", {"output_kind": "logit"})), metadata=metadata
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "output_kind must be one of" in bad.value.details()

        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request("iris-knn", ("explanation", {})), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "KNeighborsClassifier" in refused.value.details()

        ok = stub.ModelInfer(request("iris-knn", ("predict", {})), metadata=metadata)
        assert list(ok.outputs[0].contents.int64_contents) == [0, 1, 2]  # iris-knn: int classes


def test_grpc_calls_show_in_the_http_metrics(server, client):
    assert client.is_server_live()
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert 'predictor_grpc_requests_total{code="OK",method="ServerLive"}' in text
    assert 'predictor_inference_duration_seconds_count{model="plans"' in text


def test_drain_not_ready_at_once_in_flight_calls_finish(store_dir, tmp_path):
    """SIGTERM: ServerReady is false from the first instant; calls under way complete."""
    gunicorn = Gunicorn(
        tmp_path, store_dir, workers=1, inherit_settings=False, grpc_port=free_port(),
        env={"PREDICTOR_DRAIN_SECONDS": "10"},
    )  # fmt: skip
    gunicorn.start()
    address = gunicorn.grpc_address
    try:
        wait_until(lambda: _serving(address), 60, "the gRPC server answers ready")
        c = grpcclient.InferenceServerClient(address)
        tensor = grpcclient.InferInput("input-0", [1, 4], "FP64")
        tensor.set_data_from_numpy(IRIS_ROWS[:1].copy())
        answers, failures, stop = [], [], threading.Event()

        def load() -> None:
            with grpcclient.InferenceServerClient(address) as lc:
                while not stop.is_set():
                    try:
                        answers.append(lc.infer("iris", [tensor]).as_numpy("predict")[0])
                    except InferenceServerException as exc:
                        failures.append(exc)

        thread = threading.Thread(target=load)
        thread.start()
        wait_until(lambda: len(answers) >= 5, 30, "the load thread gets answers")
        gunicorn.signal(signal.SIGTERM)
        wait_until(lambda: not c.is_server_ready(), 8, "gRPC ServerReady false after SIGTERM")
        assert not c.is_model_ready("iris")
        before = len(answers)
        wait_until(lambda: len(answers) > before + 5, 8, "calls still answered while draining")
        stop.set()
        thread.join(30)
        c.close()
        assert not failures, failures[:3]
        assert gunicorn.wait(60), "gunicorn and its gRPC server exit after the drain"
    finally:
        stop_deadline = time.monotonic() + 30
        if gunicorn.alive():
            gunicorn.stop(max(1.0, stop_deadline - time.monotonic()))
