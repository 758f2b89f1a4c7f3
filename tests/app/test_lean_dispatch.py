"""The lean dispatch (service/lean_dispatch.py) answers exactly what Flask answers.

Every request below goes to two apps over the same store: one with the lean dispatch
(the default) and one with ``PREDICTOR_LEAN_DISPATCH=false``, where Flask answers every
route. Status, headers, body and the metrics each request moved must be the same;
only how long each took may differ.
"""

from __future__ import annotations

import gzip
from collections import Counter
from typing import Any

import numpy as np
import orjson
import pytest

from service import metrics
from service.auth import hash_key
from service.lean_dispatch import TEMPLATES, LeanDispatch
from service.settings import Settings
from tests.helpers import binary_request

KEY = "lean-dispatch-key"
ROW = [5.1, 3.5, 1.4, 0.2]
RID = {"X-Request-ID": "lean-0123456789"}
JSON_TYPE = {"Content-Type": "application/json"}


def _v2(rows: list[list[float]], **extra: Any) -> dict:
    return {
        "inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}],
        **extra,
    }


def _binary_v2() -> tuple[bytes, dict[str, str]]:
    rows = np.array([ROW, [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    tensor = {"name": "x", "shape": [2, 4], "datatype": "FP32",
              "parameters": {"binary_data_size": rows.nbytes}}  # fmt: skip
    outputs = [{"name": "predict_proba", "parameters": {"binary_data": True}}, {"name": "predict"}]
    return binary_request({"id": "b1", "inputs": [tensor], "outputs": outputs}, [rows.tobytes()])


BINARY_BODY, BINARY_HEADERS = _binary_v2()
ROW_TEXT = orjson.dumps({"input": ROW})
GZIP = {"Content-Encoding": "gzip"}
DIABETES = {"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP64", "data": [[0.01] * 10]}]}
BIG = orjson.dumps({"input": [ROW] * 4000})  # over the fixture's 64 KiB body limit

# (case, path, body: dict -> JSON / bytes -> raw, extra headers)
CASES: list[tuple[str, str, Any, dict[str, str]]] = [
    ("seed one row", "/predict", {"input": ROW}, {}),
    ("seed rows", "/predict", {"input": [ROW, [6.7, 3.0, 5.2, 2.3]]}, {}),
    ("seed probabilities", "/predict", {"input": ROW, "probabilities": True}, {}),
    ("seed ?probabilities", "/predict?probabilities=true", {"input": ROW}, {}),
    ("seed named model", "/predict", {"model": "diabetes", "input": [0.01] * 10}, {}),
    ("seed pinned version", "/predict", {"input": ROW, "version": "1"}, {}),
    ("seed unknown version", "/predict", {"input": ROW, "version": "9"}, {}),
    ("seed unknown model", "/predict", {"model": "nope", "input": ROW}, {}),
    ("seed wrong width", "/predict", {"input": [1.0, 2.0]}, {}),
    ("seed string feature", "/predict", {"input": ["a", 1, 2, 3]}, {}),
    ("seed too many rows", "/predict", {"input": [ROW] * 51}, {}),
    ("seed not an object", "/predict", [ROW], {}),
    ("seed invalid json", "/predict", b'{"input": [1,', {}),
    ("seed NaN", "/predict", b'{"input": [NaN, 1, 2, 3]}', {}),
    ("seed empty body", "/predict", b"", {}),
    ("seed text/plain", "/predict", ROW_TEXT, {"Content-Type": "text/plain"}),
    ("seed no content type", "/predict", ROW_TEXT, {"Content-Type": ""}),
    ("seed +json type", "/predict", {"input": ROW}, {"Content-Type": "application/x+json"}),
    ("seed gzip", "/predict", gzip.compress(ROW_TEXT), GZIP),
    ("seed bad gzip", "/predict", b"not gzip at all", GZIP),
    ("seed brotli", "/predict", b"{}", {"Content-Encoding": "br"}),
    ("seed too large", "/predict", BIG, {}),
    ("seed gzip bomb", "/predict", gzip.compress(b" " * 200_000), GZIP),
    ("v1 predict", "/v1/models/iris:predict", {"instances": [ROW]}, {}),
    ("v1 probabilities", "/v1/models/iris:predict", {"instances": [ROW], "probabilities": 1}, {}),
    ("v1 ?probabilities", "/v1/models/iris:predict?probabilities=yes", {"instances": [ROW]}, {}),
    ("v1 version", "/v1/models/iris/versions/1:predict", {"instances": [ROW]}, {}),
    ("v1 unknown version", "/v1/models/iris/versions/7:predict", {"instances": [ROW]}, {}),
    ("v1 unknown model", "/v1/models/a:b:predict", {"instances": [ROW]}, {}),
    ("v1 bad instances", "/v1/models/iris:predict", {"instances": "x"}, {}),
    ("v2 infer", "/v2/models/iris/infer", _v2([ROW]), {}),
    ("v2 proba", "/v2/models/iris/infer", _v2([ROW], outputs=[{"name": "predict_proba"}]), {}),
    ("v2 id", "/v2/models/iris/infer", _v2([ROW], id="req-7"), {}),
    ("v2 version", "/v2/models/iris/versions/1/infer", _v2([ROW]), {}),
    ("v2 binary", "/v2/models/iris/infer", BINARY_BODY, BINARY_HEADERS),
    ("v2 bad header length", "/v2/models/iris/infer", BINARY_BODY,
     {"Inference-Header-Content-Length": "abc"}),
    ("v2 unknown output", "/v2/models/iris/infer", _v2([ROW], outputs=[{"name": "nope"}]), {}),
    ("v2 explanation", "/v2/models/iris-rf/infer",
     _v2([ROW], outputs=[{"name": "explanation"}]), {}),
    ("v2 unknown model", "/v2/models/nope/infer", _v2([ROW]), {}),
    ("v2 empty body", "/v2/models/iris/infer", b"", {}),
    ("v2 invalid json", "/v2/models/iris/infer", b"{", {}),
    ("v2 regressor", "/v2/models/diabetes/infer", DIABETES, {}),
    # Not lean routes: Flask answers them in both apps (redirects, 404s, 405s).
    ("trailing slash", "/predict/", {"input": ROW}, {}),
    ("double slash", "//predict", {"input": ROW}, {}),
    ("empty name", "/v2/models//infer", _v2([ROW]), {}),
    ("extra segment", "/v2/models/iris/x/infer", _v2([ROW]), {}),
    ("empty version", "/v2/models/iris/versions//infer", _v2([ROW]), {}),
    ("non-ascii name", "/v2/models/\u00efris/infer", _v2([ROW]), {}),
    ("v1 no name", "/v1/models/:predict", {"instances": [ROW]}, {}),
]  # fmt: skip


def _apps(store_dir, **extra: Any):  # noqa: ANN001, ANN202
    from service.app import create_app

    base = dict(MODEL_STORE=store_dir, MAX_ROWS=50, MAX_BODY_BYTES=64 * 1024, **extra)
    lean = create_app(Settings(**base))
    flask_only = create_app(Settings(**base, LEAN_DISPATCH=False))
    assert isinstance(lean.wsgi_app, LeanDispatch)
    assert not isinstance(flask_only.wsgi_app, LeanDispatch)
    return lean, flask_only


@pytest.fixture(scope="module")
def apps(demo_store):  # noqa: ANN001, ANN201 - (lean, Flask only), shared: they only serve
    return _apps(demo_store)


@pytest.fixture(scope="module")
def keyed_apps(demo_store):  # noqa: ANN001, ANN201
    return _apps(demo_store, API_KEYS=f"alice:{hash_key(KEY)}")


def _counts() -> Counter:
    """Every metric sample's value by (name, labels); of durations, only the counts."""
    out: Counter = Counter()
    for family in metrics.collect():
        if not family.name.startswith("predictor_"):
            continue  # the process's own CPU and GC counters move by themselves
        for s in family.samples:
            if s.name.endswith("_sum") or s.name.endswith("_created"):
                continue
            if "duration" in s.name and s.name.endswith("_bucket") and s.labels["le"] != "+Inf":
                continue  # how long it took: the lean dispatch is meant to differ there
            if s.name == "predictor_model_last_request_timestamp_seconds":
                continue  # a clock reading
            if "pid" in s.labels:
                continue  # the in-flight gauge and infos of this process: not per request
            out[(s.name, tuple(sorted(s.labels.items())))] += s.value
    return out


def _send(app, path: str, body: Any, headers: dict[str, str]):  # noqa: ANN001, ANN202
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = {**JSON_TYPE, **RID, **headers}
    if sent["Content-Type"] == "":
        del sent["Content-Type"]
    before = _counts()
    with app.test_client() as client:
        response = client.post(path, data=data, headers=sent)
        answer = (response.status_code, sorted(response.headers.items()), response.get_data())
    after = _counts()
    moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    return answer, moved


@pytest.mark.parametrize(("case", "path", "body", "headers"), CASES, ids=[c[0] for c in CASES])
def test_both_dispatches_answer_the_same(apps, case, path, body, headers):
    lean, flask_only = apps
    lean_answer, lean_moved = _send(lean, path, body, headers)
    flask_answer, flask_moved = _send(flask_only, path, body, headers)
    assert lean_answer == flask_answer
    assert lean_moved == flask_moved
    # Every request is counted once, under the route's template.
    http = {k: v for k, v in lean_moved.items() if k[0] == "predictor_http_requests_total"}
    assert list(http.values()) == [1.0], http


@pytest.mark.parametrize("presented", [None, "wrong-key", KEY])
def test_api_keys_are_enforced_the_same_way(keyed_apps, presented):
    lean, flask_only = keyed_apps
    headers = {"X-API-Key": presented} if presented else {}
    for path, body in [
        ("/predict", {"input": ROW}),
        ("/v1/models/iris:predict", {"instances": [ROW]}),
        ("/v2/models/iris/infer", _v2([ROW])),
    ]:
        lean_answer, lean_moved = _send(lean, path, body, headers)
        assert (lean_answer, lean_moved) == _send(flask_only, path, body, headers)
        status, answer_headers, _ = lean_answer
        assert status == (200 if presented == KEY else 401)
        assert (("X-API-Key-Id", "alice") in answer_headers) == (presented == KEY)
        assert (status == 401) == any(name == "WWW-Authenticate" for name, _ in answer_headers)


def test_a_request_without_an_id_gets_a_fresh_one_in_both(apps):
    for app in apps:
        with app.test_client() as client:
            first = client.post("/predict", json={"input": ROW}).headers["X-Request-ID"]
            second = client.post("/predict", json={"input": ROW}).headers["X-Request-ID"]
        assert len(first) == 32 and int(first, 16) >= 0 and first != second


def test_the_prediction_routes_skip_flask_and_nothing_else_does(store_dir):
    lean, _ = _apps(store_dir)
    dispatch = lean.wsgi_app
    through_flask = []
    flask_wsgi = dispatch.flask_wsgi
    dispatch.flask_wsgi = lambda environ, start: (
        through_flask.append(environ["PATH_INFO"]) or flask_wsgi(environ, start)
    )
    with lean.test_client() as client:
        assert client.post("/predict", json={"input": ROW}).status_code == 200
        assert client.post("/v1/models/iris:predict", json={"instances": [ROW]}).status_code == 200
        assert client.post("/v2/models/iris/infer", json=_v2([ROW])).status_code == 200
        assert through_flask == []
        assert client.get("/healthz").status_code == 200
        assert client.get("/predict").status_code == 405
        assert client.post("/v2/repository/index", json={}).status_code == 403
    assert through_flask == ["/healthz", "/predict", "/v2/repository/index"]


@pytest.mark.parametrize(
    "path",
    [
        "/predict",
        "/v1/models/iris:predict",
        "/v1/models/a:b:predict",
        "/v1/models/iris/versions/3:predict",
        "/v2/models/iris/infer",
        "/v2/models/stats/infer",
        "/v2/models/iris/versions/2/infer",
        "/v2/models/versions/infer",
    ],
)
def test_each_lean_route_is_the_route_flask_matches(apps, path):
    lean, _ = apps
    template, _answer = lean.wsgi_app.route(path)
    rule, args = lean.url_map.bind("localhost").match(path, "POST", return_rule=True)
    assert template == rule.rule and template in TEMPLATES
    # The answer is bound to the same name and version Flask's view would get.
    assert tuple(getattr(_answer, "args", ())[2:]) == (
        (args["name"], args.get("version")) if args else ()
    )


def test_a_view_without_its_template_stops_the_app(store_dir, monkeypatch):
    from service import lean_dispatch

    monkeypatch.setattr(lean_dispatch, "TEMPLATES", (*TEMPLATES, "/v9/predict"))
    with pytest.raises(RuntimeError, match="/v9/predict"):
        _apps(store_dir)


@pytest.fixture(scope="module")
def user_apps(tmp_path_factory):  # noqa: ANN001, ANN201 - (lean, Flask only, rows, estimator)
    """A data scientist's own model: a DataFrame Pipeline with int, float and string
    columns, string classes and gaps, published from its data."""
    from service import verification_data
    from service.publish import publish_model
    from tests.conftest import TEST_SIGNING_KEY
    from tests.helpers import mixed, onehot_pipeline

    frame = mixed("str")
    X = frame.drop(columns="target")
    estimator = onehot_pipeline().fit(X, frame["target"])
    store = tmp_path_factory.mktemp("user-store") / "models"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(verification_data, "SYNTHETIC_ROWS", 5_000)  # not this test's business
        publish_model(estimator, name="accounts", data=frame, target="target", store=store,
                      signing_key=TEST_SIGNING_KEY, promote=True)  # fmt: skip
    asked = X.iloc[::25]
    rows = [[None if isinstance(v, float) and np.isnan(v) else v for v in row]
            for row in asked.astype(object).values.tolist()]  # fmt: skip
    assert any(None in row for row in rows)
    return (*_apps(store), rows, estimator)


def _user_cases(rows: list[list[Any]]) -> list[tuple[str, str, Any]]:
    def v2(batch: list[list[Any]]) -> dict:
        types = ("INT64", "FP64", "BYTES", "BYTES")
        return {"inputs": [{"name": n, "datatype": t, "shape": [len(batch)],
                            "data": [row[j] for row in batch]}
                           for j, (n, t) in enumerate(zip(USER_FEATURES, types, strict=True))],
                "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}  # fmt: skip

    unseen, wrong_type, no_age = ([*r] for r in (rows[0], rows[0], rows[0]))
    unseen[2], wrong_type[1], no_age[0] = "purple", "a lot", None
    named = [dict(zip(USER_FEATURES, r, strict=True)) for r in rows]
    seed = {"model": "accounts", "input": rows}
    return [
        ("seed rows with gaps", "/predict", seed),
        ("seed probabilities", "/predict", {**seed, "probabilities": True}),
        ("v1 named rows", "/v1/models/accounts:predict", {"instances": named}),
        ("v2 per-feature tensors", "/v2/models/accounts/infer", v2(rows)),
        ("seed unseen category", "/predict", {"model": "accounts", "input": [unseen]}),
        ("seed text for a number", "/predict", {"model": "accounts", "input": [wrong_type]}),
        ("seed no age (imputed)", "/predict", {"model": "accounts", "input": [no_age]}),
        ("v2 text for a number", "/v2/models/accounts/infer", v2([wrong_type])),
    ]  # fmt: skip


USER_FEATURES = ("age", "income", "colour", "city")


def test_a_users_pipeline_is_answered_the_same_by_both_dispatches(user_apps):
    import pandas as pd

    lean, flask_only, rows, estimator = user_apps
    statuses = []
    for case, path, body in _user_cases(rows):
        lean_answer, lean_moved = _send(lean, path, body, {})
        assert (lean_answer, lean_moved) == _send(flask_only, path, body, {}), case
        status, _, raw = lean_answer
        statuses.append(status)
        if status == 200 and path == "/predict":
            asked = pd.DataFrame(body["input"], columns=list(USER_FEATURES)).fillna(np.nan)
            expected = estimator.predict(asked).tolist()
            assert orjson.loads(raw)["prediction"] == expected, case
    # An unseen colour and a missing age are the pipeline's to answer (it ignores
    # unknown categories and imputes numbers); text for a number is refused.
    assert statuses == [200, 200, 200, 200, 200, 400, 200, 400], statuses
