"""Every malformed request gets a 4xx with a stable code and the exact reason."""

from __future__ import annotations

import pytest

from tests.helpers import IRIS_ROW

V1 = "/v1/models/iris:predict"
SEED = "/predict"
ROW_A = {
    "sepal length (cm)": 6.7,
    "sepal width (cm)": 3.0,
    "petal length (cm)": 5.2,
    "petal width (cm)": 2.3,
}

CASES = [
    # (id, path, raw body or JSON value, content type, status, code, words in the message)
    ("seed wrong count", SEED, {"input": [1, 2, 3]}, None, 400, "wrong_feature_count",
     ["expected 4 features [sepal length (cm), sepal width (cm)", "got 3"]),
    ("v1 wrong count", V1, {"instances": [[1, 2, 3, 4, 5]]}, None, 400, "wrong_feature_count",
     ["expected 4 features", "got 5"]),
    ("missing named feature", V1,
     {"instances": [{k: v for k, v in ROW_A.items() if k != "petal width (cm)"}]}, None, 400,
     "missing_features", ["row 0", "missing feature ['petal width (cm)']"]),
    ("extra named feature", V1, {"instances": [ROW_A | {"colour": 1}]}, None, 400,
     "unknown_features", ["row 0", "unknown feature ['colour']"]),
    ("NaN literal", V1, b'{"instances": [[NaN, 3.5, 1.4, 0.2]]}', None, 400, "non_finite_value",
     ["NaN and Infinity", "finite numbers"]),
    ("Infinity literal", SEED, b'{"input": [Infinity, 3.5, 1.4, 0.2]}', None, 400,
     "non_finite_value", ["finite"]),
    ("overflowing number", SEED, b'{"input": [1e999, 3.5, 1.4, 0.2]}', None, 400,
     "non_finite_value", ["finite"]),
    ("string value", V1, {"instances": [[5.1, "wide", 1.4, 0.2]]}, None, 400, "invalid_type",
     ['row 0, feature "sepal width (cm)"', 'expected a number, got string "wide"']),
    ("null value", SEED, {"input": [5.1, None, 1.4, 0.2]}, None, 400, "missing_value",
     ['feature "sepal width (cm)"', "a value is required", "not nullable"]),
    ("boolean value", SEED, {"input": [True, 3.5, 1.4, 0.2]}, None, 400, "invalid_type",
     ["expected a number, got boolean true"]),
    ("ragged rows", V1, {"instances": [IRIS_ROW, IRIS_ROW, [1, 2, 3]]}, None, 400, "ragged_rows",
     ["row 0 has 4 values, row 2 has 3"]),
    ("row is a number", V1, {"instances": [1, 2]}, None, 400, "invalid_type",
     ["row 0", "got number"]),
    ("empty batch v1", V1, {"instances": []}, None, 400, "empty_batch", ["at least one row"]),
    ("empty batch seed", SEED, {"input": []}, None, 400, "empty_batch", ["at least one row"]),
    ("too many rows", V1, {"instances": [IRIS_ROW] * 51}, None, 413, "too_many_rows",
     ["51 rows exceed the limit of 50"]),
    ("body too large", V1, b'{"instances": [' + b"[1,2,3,4]," * 8000 + b"[1,2,3,4]]}", None, 413,
     "payload_too_large", ["exceeds the limit of 65536 bytes"]),
    ("not JSON", V1, b"instances=1,2,3,4", None, 400, "invalid_json", ["not valid JSON"]),
    ("truncated JSON", SEED, b'{"input": [1, 2', None, 400, "invalid_json", ["not valid JSON"]),
    ("deeply nested", SEED, b'{"input": ' + b"[" * 5000 + b"]" * 5000 + b"}", None, 400,
     "invalid_json", ["not valid JSON"]),
    ("wrong content type", V1, b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}', "text/plain", 415,
     "unsupported_media_type", ["expected Content-Type: application/json, got text/plain"]),
    ("form content type", SEED, b"input=5.1", "application/x-www-form-urlencoded", 415,
     "unsupported_media_type", ["application/json"]),
    ("missing instances", V1, {"inputs": [IRIS_ROW]}, None, 400, "missing_field",
     ['"instances"']),
    ("missing input", SEED, {"x": [2, 3]}, None, 400, "missing_field", ['"input"']),
    ("instances not a list", V1, {"instances": "5.1,3.5"}, None, 400, "invalid_type",
     ['"instances" must be a list of rows, got string']),
    ("unknown model", "/v1/models/nope:predict", {"instances": [IRIS_ROW]}, None, 404,
     "model_not_found", ["'nope'", "available: diabetes, iris, iris-rf"]),
    ("unknown version", "/v1/models/iris/versions/7:predict", {"instances": [IRIS_ROW]}, None,
     404, "version_not_found", ["no version '7'", "available: 1"]),
    ("unknown seed model", SEED, {"input": IRIS_ROW, "model": "nope"}, None, 404,
     "model_not_found", ["'nope'"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "code", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_input_is_refused_with_reason(client, path, body, content_type, status, code, words):
    if isinstance(body, bytes):
        response = client.post(path, data=body, content_type=content_type or "application/json")
    else:
        response = client.post(path, json=body)
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code
    for word in words:
        assert word in error["message"]
    # The same worker keeps answering good requests.
    ok = client.post(SEED, json={"input": IRIS_ROW})
    assert ok.status_code == 200 and ok.get_json()["prediction"] == ["setosa"]


def test_unknown_route_and_method_are_json(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.get_json()["error"]["message"] == "no route for GET /nope"
    response = client.get(SEED)
    assert response.status_code == 405
    assert "use" in response.get_json()["error"]["message"]
    assert "POST" in response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"input": [5, 3, 1, 0]}, {"input": [5.0, 3.0, 1.0, 0.0]}),
        ({"input": [[5, 3, 1, 0]]}, {"input": [5.0, 3.0, 1.0, 0.0]}),
    ],
)
def test_ints_and_floats_are_the_same_input(client, body, expected):
    a = client.post(SEED, json=body).get_json()
    b = client.post(SEED, json=expected).get_json()
    assert a["prediction"] == b["prediction"]
