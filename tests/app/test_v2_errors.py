"""V2 routes in-process: a bad request gets the protocol's {"error": "..."} and its status."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import orjson
import pytest

from service.app import create_app
from service.settings import Settings
from tests.helpers import IRIS_FEATURES, IRIS_ROW, binary_request

INFER = "/v2/models/iris/infer"


@pytest.fixture(scope="module")
def client(demo_store):
    """One app for the module: these requests change nothing (loading it costs ~1 s)."""
    settings = Settings(MODEL_STORE=demo_store, MAX_ROWS=50, MAX_BODY_BYTES=64 * 1024)
    with create_app(settings).test_client() as c:
        yield c


def matrix(rows, datatype="FP64", name="input-0", shape=None):
    shape = shape or [len(rows), len(rows[0])]
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": rows}]}


def per_feature(values, datatype="FP64"):
    return {
        "inputs": [
            {"name": n, "shape": [1], "datatype": datatype, "data": [v]}
            for n, v in zip(IRIS_FEATURES, values, strict=True)
        ]
    }


# (case id, url, body (dict -> JSON, bytes -> raw), extra headers, status, words in the message)
CASES = [
    ("unknown model", "/v2/models/nope/infer", matrix([IRIS_ROW]), {}, 404, "'nope' not found"),
    (
        "unknown version",
        "/v2/models/iris/versions/7/infer",
        matrix([IRIS_ROW]),
        {},
        404,
        "no version '7'",
    ),
    ("bad JSON", INFER, b'{"inputs": [', {}, 400, "not valid JSON"),
    ("empty body", INFER, b"", {}, 400, "empty"),
    ("body not an object", INFER, b"[1, 2]", {}, 400, "must be a JSON object"),
    ("no inputs", INFER, {"inputs": []}, {}, 400, '"inputs" must be a non-empty list'),
    ("wrong feature count", INFER, matrix([[1.0, 2.0, 3.0]]), {}, 400, "expected shape [N, 4]"),
    (
        "shape and data disagree",
        INFER,
        matrix([IRIS_ROW], shape=[2, 4]),
        {},
        400,
        "shape holds 8 elements, data has 4",
    ),
    ("negative shape", INFER, matrix([IRIS_ROW], shape=[-1, 4]), {}, 400, "non-negative integers"),
    ("3-D tensor", INFER, matrix([[IRIS_ROW]], shape=[1, 1, 4]), {}, 400, "unknown input"),
    (
        "unknown datatype",
        INFER,
        matrix([IRIS_ROW], datatype="FP128"),
        {},
        400,
        "datatype 'FP128' is not supported",
    ),
    (
        "BYTES for a float feature",
        INFER,
        matrix([["a", "b", "c", "d"]], datatype="BYTES"),
        {},
        400,
        "send FP64",
    ),
    (
        "string in FP64 data",
        INFER,
        matrix([[5.1, "3.5", 1.4, 0.2]]),
        {},
        400,
        "element 1 is string",
    ),
    (
        "float in INT64 data",
        INFER,
        matrix([[5.1, 3.5, 1.4, 0.2]], datatype="INT64"),
        {},
        400,
        "must be integers",
    ),
    (
        "bool in FP32 data",
        INFER,
        matrix([[True, 3.5, 1.4, 0.2]], datatype="FP32"),
        {},
        400,
        "element 0 is boolean",
    ),
    (
        "int out of INT32 range",
        INFER,
        matrix([[2**40, 3, 1, 0]], datatype="INT32"),
        {},
        400,
        "does not fit the datatype INT32",
    ),
    ("empty batch", INFER, matrix([], shape=[0, 4]), {}, 400, "batch dimension is 0"),
    (
        "missing feature",
        INFER,
        {"inputs": per_feature(IRIS_ROW)["inputs"][:3]},
        {},
        400,
        "missing input ['petal width (cm)']",
    ),
    (
        "unknown feature",
        INFER,
        {
            "inputs": [
                *per_feature(IRIS_ROW)["inputs"],
                {"name": "colour", "shape": [1], "datatype": "FP64", "data": [1.0]},
            ]
        },
        {},
        400,
        "unknown input ['colour']",
    ),
    (
        "duplicate feature",
        INFER,
        {"inputs": [*per_feature(IRIS_ROW)["inputs"], per_feature(IRIS_ROW)["inputs"][0]]},
        {},
        400,
        "given twice",
    ),
    (
        "ragged per-feature",
        INFER,
        {
            "inputs": [
                {**t, "shape": [2], "data": [1.0, 2.0]} if i == 0 else t
                for i, t in enumerate(per_feature(IRIS_ROW)["inputs"])
            ]
        },
        {},
        400,
        "same batch size",
    ),
    (
        "missing data",
        INFER,
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64"}]},
        {},
        400,
        '"data" is missing',
    ),
    (
        "data not a list",
        INFER,
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": 5}]},
        {},
        400,
        '"data" must be a list',
    ),
    (
        "unknown output",
        INFER,
        {**matrix([IRIS_ROW]), "outputs": [{"name": "logits"}]},
        {},
        400,
        "no output 'logits'",
    ),
    (
        "classification extension",
        INFER,
        {
            **matrix([IRIS_ROW]),
            "outputs": [{"name": "predict", "parameters": {"classification": 2}}],
        },
        {},
        400,
        "classification extension",
    ),
    (
        "predict_proba of a regressor",
        "/v2/models/diabetes/infer",
        {**matrix([[0.0] * 10]), "outputs": [{"name": "predict_proba"}]},
        {},
        400,
        "no output 'predict_proba'",
    ),
    ("id not a string", INFER, {**matrix([IRIS_ROW]), "id": 5}, {}, 400, '"id" must be a string'),
    ("too many rows", INFER, matrix([IRIS_ROW] * 51), {}, 413, "exceed the limit of 50 rows"),
    (
        "header length not a number",
        INFER,
        orjson.dumps(matrix([IRIS_ROW])),
        {"Inference-Header-Content-Length": "abc"},
        400,
        "must be an integer",
    ),
    (
        "header length past the body",
        INFER,
        orjson.dumps(matrix([IRIS_ROW])),
        {"Inference-Header-Content-Length": "100000"},
        400,
        "outside the body",
    ),
    (
        "binary size past the body",
        INFER,
        *binary_request(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [1, 4],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 64},
                    }
                ]
            },
            [b"\0" * 16],
        ),
        400,
        "exceeds the 16 bytes left",
    ),
    (
        "binary size wrong for the shape",
        INFER,
        *binary_request(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [1, 4],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 8},
                    }
                ]
            },
            [b"\0" * 8],
        ),
        400,
        "need 16 bytes, got 8",
    ),
    (
        "unclaimed binary bytes",
        INFER,
        *binary_request(matrix([IRIS_ROW]), [b"\0" * 8]),
        400,
        "no input claims them",
    ),
    (
        "NaN in binary data",
        INFER,
        *binary_request(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [1, 4],
                        "datatype": "FP64",
                        "parameters": {"binary_data_size": 32},
                    }
                ]
            },
            [np.array([[5.1, np.nan, 1.4, 0.2]]).tobytes()],
        ),
        400,
        'feature "sepal width (cm)": a value is required (got a missing value); this feature '
        "is not nullable",
    ),
    ("bad gzip", INFER, b"not gzip", {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
    ("unknown encoding", INFER, b"{}", {"Content-Encoding": "br"}, 415, "br is not supported"),
]


@pytest.mark.parametrize(
    ("url", "body", "headers", "status", "words"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_v2_error_table(client, url, body, headers, status, words):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    response = client.post(url, data=data, headers=headers)
    assert response.status_code == status, response.get_data(as_text=True)
    payload = response.get_json()
    assert set(payload) == {"error"} and isinstance(payload["error"], str)
    assert words in payload["error"]


def test_body_over_the_limit_is_413(client):
    response = client.post(INFER, data=b" " * (64 * 1024 + 1))
    assert response.status_code == 413 and "exceeds the limit" in response.get_json()["error"]


def test_gzip_bomb_is_413_not_inflated(client):
    response = client.post(
        INFER, data=gzip.compress(b" " * (10 * 1024 * 1024)), headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 413


def test_gzip_body_is_accepted(client):
    response = client.post(
        INFER,
        data=gzip.compress(orjson.dumps(matrix([IRIS_ROW]))),
        headers={"Content-Encoding": "gzip"},
    )
    assert response.status_code == 200
    assert response.get_json()["outputs"][0]["data"] == ["setosa"]


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [
        ("/v2/models/nope", 404, "'nope' not found"),
        ("/v2/models/iris/versions/9", 404, "no version '9'"),
        ("/v2/models/nope/ready", 404, "'nope' not found"),
        ("/v2/models/iris/versions/9/ready", 404, "no version '9'"),
    ],
)
def test_v2_metadata_errors(client, url, status, words):
    response = client.get(url)
    assert response.status_code == status
    assert words in response.get_json()["error"]


def test_nested_flat_and_typed_data_agree(client):
    """Row-major data, flat or nested, any numeric datatype: the same answer."""
    rows = [IRIS_ROW, [6.7, 3.0, 5.2, 2.3]]
    flat = [v for row in rows for v in row]
    answers = set()
    for data, datatype in ((rows, "FP64"), (flat, "FP64"), (flat, "FP32"), (rows, "FP16")):
        body = matrix(data, datatype=datatype, shape=[2, 4])
        answer = client.post(INFER, data=orjson.dumps(body)).get_json()
        answers.add(tuple(answer["outputs"][0]["data"]))
    assert answers == {("setosa", "virginica")}
    ints = client.post(INFER, data=orjson.dumps(matrix([[5, 3, 1, 0]], datatype="INT32")))
    assert ints.status_code == 200 and ints.get_json()["outputs"][0]["data"] == ["setosa"]


def test_binary_request_and_response_framing(client):
    rows = np.array([IRIS_ROW, [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    payload = {
        "id": "b1",
        "inputs": [
            {
                "name": "x",
                "shape": [2, 4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": rows.nbytes},
            }
        ],
        "outputs": [
            {"name": "predict_proba", "parameters": {"binary_data": True}},
            {"name": "predict"},
        ],
    }
    data, headers = binary_request(payload, [rows.tobytes()])
    response = client.post(INFER, data=data, headers=headers)
    assert response.status_code == 200
    split = int(response.headers["Inference-Header-Content-Length"])
    raw = response.get_data()
    header = orjson.loads(raw[:split])
    assert header["id"] == "b1"
    proba_meta, predict = header["outputs"]
    # iris's classes are the species names: predict() answers them, as a BYTES tensor.
    assert predict == {
        "name": "predict",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["setosa", "virginica"],
    }
    assert proba_meta["parameters"] == {"binary_data_size": 48} and "data" not in proba_meta
    proba = np.frombuffer(raw[split:], dtype="<f8").reshape(2, 3)
    assert proba.argmax(axis=1).tolist() == [0, 2]


def test_not_ready_without_models(tmp_path):
    app = create_app(Settings(MODEL_STORE=tmp_path / "empty"))
    with app.test_client() as c:
        assert c.get("/v2/health/live").status_code == 200
        response = c.get("/v2/health/ready")
        assert response.status_code == 503 and response.get_json() == {"ready": False}
        assert c.get("/v2").get_json()["extensions"] == [
            "model_repository",
            "binary_tensor_data",
            "statistics",
        ]


def test_string_features_as_bytes(tmp_path):
    """A pipeline that takes a string column: BYTES tensors, JSON and binary."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from service.manifest import Feature
    from service.publish import publish_estimator
    from service.store import ModelStore

    frame = pd.DataFrame({"colour": ["red", "blue", "red", "blue"], "size": [1.0, 2.0, 1.5, 2.5]})
    model = make_pipeline(
        ColumnTransformer([("c", OneHotEncoder(), ["colour"])], remainder="passthrough"),
        LogisticRegression(),
    ).fit(frame, ["a", "b", "a", "b"])
    store = ModelStore(tmp_path / "models")
    publish_estimator(
        store,
        model,
        name="shapes",
        features=[
            Feature(name="colour", type="string", categories=["blue", "red"]),
            Feature(name="size"),
        ],
        sample_input=[["red", 1.0]],
        promote=True,
    )
    app = create_app(Settings(MODEL_STORE=store.root))
    with app.test_client() as c:
        meta = c.get("/v2/models/shapes").get_json()
        assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
            ("colour", "BYTES"),
            ("size", "FP64"),
        ]
        assert meta["outputs"][0]["datatype"] == "BYTES"
        colours = [b"red", b"blue"]
        blob = b"".join(struct.pack("<I", len(s)) + s for s in colours)
        payload = {
            "inputs": [
                {
                    "name": "colour",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(blob)},
                },
                {"name": "size", "shape": [2, 1], "datatype": "FP32", "data": [1.0, 2.5]},
            ],
            "outputs": [{"name": "predict"}],
        }
        data, headers = binary_request(payload, [blob])
        answer = c.post("/v2/models/shapes/infer", data=data, headers=headers).get_json()
        assert answer["outputs"][0] == {
            "name": "predict",
            "datatype": "BYTES",
            "shape": [2],
            "data": ["a", "b"],
        }
        wrong = {
            "inputs": [
                {**payload["inputs"][0], "parameters": {}, "data": ["red", 3]},
                payload["inputs"][1],
            ]
        }
        error = c.post("/v2/models/shapes/infer", data=orjson.dumps(wrong))
        assert (
            error.status_code == 400 and "BYTES data must be strings" in error.get_json()["error"]
        )


TOKEN = "s3cret-admin-token-0123456789abcdef"  # 32+ bytes: shorter tokens stop the service


@pytest.mark.parametrize(
    ("token", "headers", "status", "words"),
    [
        (None, {"Authorization": "Bearer anything"}, 403, "set PREDICTOR_ADMIN_TOKEN"),
        (TOKEN, {}, 401, "missing credentials"),
        (TOKEN, {"Authorization": "Basic czNjcmV0"}, 401, "missing credentials"),
        (TOKEN, {"Authorization": f"Bearer {TOKEN[:-1]}"}, 403, "not valid"),
        (TOKEN, {"Authorization": f"Bearer {TOKEN} "}, 200, ""),
    ],
    ids=["not configured", "no header", "wrong scheme", "wrong token", "right token"],
)
def test_repository_auth(demo_store, token, headers, status, words):
    app = create_app(Settings(MODEL_STORE=demo_store, ADMIN_TOKEN=token), load_models=False)
    with app.test_client() as c:
        for url in (
            "/v2/repository/index",
            "/v2/repository/models/nope/load",
            "/v2/repository/models/nope/unload",
        ):
            response = c.post(url, headers=headers)
            expected = 404 if status == 200 and "nope" in url else status
            assert response.status_code == expected, (url, response.get_data(as_text=True))
            if expected == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
            if status != 200:
                assert words in response.get_json()["error"]


def test_repository_unload_load_in_process(demo_store):
    admin = {"Authorization": f"Bearer {TOKEN}"}
    app = create_app(Settings(MODEL_STORE=demo_store, ADMIN_TOKEN=TOKEN))
    with app.test_client() as c:
        assert c.post("/v2/repository/models/iris/unload", headers=admin).status_code == 200
        index = {m["name"]: m for m in c.post("/v2/repository/index", headers=admin).get_json()}
        assert index["iris"] == {
            "name": "iris",
            "version": "1",
            "state": "UNAVAILABLE",
            "reason": "unloaded",
        }
        ready_only = c.post("/v2/repository/index", headers=admin, json={"ready": True}).get_json()
        assert "iris" not in {m["name"] for m in ready_only} and len(ready_only) == 2
        assert c.post(INFER, data=orjson.dumps(matrix([IRIS_ROW]))).status_code == 503
        assert c.get("/v2/models/iris/ready").status_code == 503
        loaded = c.post("/v2/repository/models/iris/load", headers=admin)
        assert loaded.get_json() == {"name": "iris", "version": "1", "state": "READY"}
        assert c.post(INFER, data=orjson.dumps(matrix([IRIS_ROW]))).status_code == 200
        refused = c.post(
            "/v2/repository/models/iris/load", headers=admin, json={"parameters": {"config": "{}"}}
        )
        assert refused.status_code == 400 and "not supported" in refused.get_json()["error"]
