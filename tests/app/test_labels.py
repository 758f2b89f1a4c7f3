"""A classifier answers its own classes on every protocol, whatever ``--labels`` says.

The bug this guards: ``--labels stay,leave`` used to rename ``classes_`` by
position, so a churn model whose classes are ``['leave', 'stay']`` answered
``stay`` on V1 where scikit-learn said ``leave``, with no error.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from service.app import create_app
from service.settings import Settings
from tests.helpers import run_cli

from . import protocols

CHURN_ROW = [30, "basic", 10.0, "us"]
CHURN_FEATURES = ["age", "plan", "spend", "region"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args)


def churn_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "plan": rng.choice(["basic", "pro", "premium"], n),
            "spend": rng.gamma(2.0, 20.0, n).round(2),
            "region": rng.choice(["us", "eu", "asia"], n),
        }
    )
    score = (frame.age < 35) * 1.5 + (frame.plan == "basic") * 1.0 - frame.spend / 40
    frame["churn"] = np.where(score + rng.normal(0, 0.5, n) > 0.5, "leave", "stay")
    return frame


def churn_pipeline():  # noqa: ANN201
    return make_pipeline(
        ColumnTransformer(
            [
                ("num", StandardScaler(), ["age", "spend"]),
                ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"]),
            ]
        ),
        LogisticRegression(),
    )


@pytest.fixture(scope="module")
def churn(tmp_path_factory) -> tuple[object, Path]:
    frame = churn_frame()
    model = churn_pipeline().fit(frame[CHURN_FEATURES], frame["churn"])
    path = tmp_path_factory.mktemp("churn") / "churn.joblib"
    joblib.dump(model, path)
    return model, path


def publish_churn(path: Path, store: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli(
        "publish", str(path), "--name", "churn", "--store", str(store), "--promote",
        "--features", "age:int,plan:string,spend,region:string",
        "--sample", '[[30, "basic", 10.0, "us"]]', *extra,
    )  # fmt: skip


def test_positional_labels_refused_for_string_classes(churn, tmp_path):
    _, path = churn
    result = publish_churn(path, tmp_path / "models", "--labels", "stay,leave")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "['leave', 'stay']" in lines[0]
    assert "--labels leave=" in lines[0] and "stay=" in lines[0]  # the mapping syntax
    assert not (tmp_path / "models" / "churn").exists()


def test_unknown_class_in_mapping_refused(churn, tmp_path):
    _, path = churn
    result = publish_churn(path, tmp_path / "models", "--labels", "leave=Leaves,stays=Stays")
    assert result.returncode == 1
    assert "names class 'stays'" in result.stderr and "['leave', 'stay']" in result.stderr


def test_churn_answers_its_classes_on_every_protocol(churn, tmp_path):
    model, path = churn
    store = tmp_path / "models"
    result = publish_churn(path, store, "--labels", "leave=Leaves,stay=Stays")
    assert result.returncode == 0, result.stderr
    frame = churn_frame(200, seed=1)
    rows = frame[CHURN_FEATURES].astype(object).values.tolist()
    rows = [[int(r[0]), r[1], float(r[2]), r[3]] for r in rows] + [CHURN_ROW]
    X = pd.DataFrame(rows, columns=CHURN_FEATURES)
    expected = model.predict(X).tolist()
    expected_proba = model.predict_proba(X)
    assert model.predict(X.tail(1)).tolist() == ["leave"]  # the row
    assert set(expected) == {"leave", "stay"}

    app = create_app(Settings(MODEL_STORE=store, DEFAULT_MODEL="churn"))
    with app.test_client() as client:
        meta = client.get("/v1/models/churn").get_json()
        assert meta["classes"] == ["leave", "stay"]
        assert meta["output_labels"] == ["Leaves", "Stays"]
        features = meta["features"]
        answers = {
            "seed": protocols.seed(client, "churn", rows),
            "v1 ordered": protocols.v1_ordered(client, "churn", rows),
            "v1 named": protocols.v1_named(client, "churn", rows, CHURN_FEATURES),
            "v2": protocols.v2(client, "churn", rows, features, with_proba=True),
        }
        v2_meta = client.get("/v2/models/churn").get_json()
    assert v2_meta["outputs"][0]["datatype"] == "BYTES"
    assert v2_meta["parameters"]["classes"] == ["leave", "stay"]
    for protocol, (predictions, proba) in answers.items():
        assert predictions == expected, protocol
        if protocol == "v2":
            got = np.asarray(proba, dtype=float).reshape(len(rows), 2)
        else:  # keyed by the class itself, never by the display name
            assert set(proba[0]) == {"leave", "stay"}, protocol
            got = np.array([[p["leave"], p["stay"]] for p in proba])
        np.testing.assert_allclose(got, expected_proba, atol=1e-6, err_msg=protocol)


@pytest.mark.parametrize(
    ("classes", "labels", "v2_type"),
    [
        ([0, 1], "stay,leave", "INT64"),  # 0..k-1: position and value agree
        ([False, True], "false=Stays,true=Leaves", "BOOL"),
        ([3, 7], "3=Three,7=Seven", "INT64"),
    ],
    ids=["int-positional", "bool", "int-mapping"],
)
def test_int_and_bool_classes_stay_json_numbers_and_booleans(tmp_path, classes, labels, v2_type):
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = np.where(X.a + X.b > 0, classes[1], classes[0])
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    path = tmp_path / "m.joblib"
    joblib.dump(model, path)
    store = tmp_path / "models"
    result = cli("publish", str(path), "--name", "m", "--store", str(store), "--promote",
                 "--labels", labels)  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = X.head(50).values.tolist()
    expected = model.predict(X.head(50)).tolist()
    assert {type(v) for v in expected} == {type(classes[0])}
    app = create_app(Settings(MODEL_STORE=store))
    with app.test_client() as client:
        features = client.get("/v1/models/m").get_json()["features"]
        v1, proba = protocols.v1_ordered(client, "m", rows)
        seed, _ = protocols.seed(client, "m", rows)
        v2, _ = protocols.v2(client, "m", rows, features, with_proba=False)
        v2_meta = client.get("/v2/models/m").get_json()
    for got in (v1, seed, v2):
        assert got == expected and [type(v) for v in got] == [type(v) for v in expected]
    assert set(proba[0]) == {str(c).lower() for c in classes}  # JSON text of each class
    assert v2_meta["outputs"][0]["datatype"] == v2_type


def test_positional_labels_refused_for_non_index_ints(tmp_path):
    X = np.arange(20, dtype=float).reshape(10, 2)
    model = LogisticRegression().fit(X, [3] * 5 + [7] * 5)
    path = tmp_path / "m.joblib"
    joblib.dump(model, path)
    result = cli("publish", str(path), "--name", "m", "--store", str(tmp_path / "models"),
                 "--features", "a,b", "--labels", "Three,Seven")  # fmt: skip
    assert result.returncode == 1
    assert "not 0..1" in result.stderr and "--labels 3=" in result.stderr
