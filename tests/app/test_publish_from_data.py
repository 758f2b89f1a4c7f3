"""The issue's churn model, published from train.csv with --target and no other flag,
and the one-line errors users will meet."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pandas as pd
import pytest

from service import cli
from service.app import create_app
from service.settings import Settings

from . import protocols
from .test_equivalence_matrix import readme_example

ROW = [30, "basic", None, "us"]  # spend missing


@pytest.fixture(scope="module")
def churn(tmp_path_factory):  # noqa: ANN201
    directory = tmp_path_factory.mktemp("churn")
    model, frame, argv = readme_example(directory)
    store = directory / "models"
    assert cli.main([*argv, "--store", str(store)]) == 0
    return model, frame, directory, store


def test_churn_manifest_and_every_protocol(churn):
    model, frame, _, store = churn
    manifest = json.loads((store / "churn" / "1" / "manifest.json").read_text())
    features = {f["name"]: f for f in manifest["features"]}
    assert list(features) == ["age", "plan", "spend", "region"]
    assert features["plan"]["categories"] == ["basic", "premium", "pro"]
    assert features["region"]["categories"] == ["asia", "eu", "us"]
    assert features["spend"]["nullable"] and features["spend"]["missing_rate"] > 0
    assert features["age"]["minimum"] >= 18 and features["age"]["maximum"] <= 79
    assert set(manifest["metrics"]) == {"accuracy", "f1_macro", "roc_auc"}
    compiled = manifest["compiled"]
    assert compiled["ok"] and compiled["distinct_rows"] >= 100_000
    assert compiled["rows_by_source"]["data"] == len(frame)
    assert manifest["classes"] == ["leave", "stay"]

    expected = model.predict(pd.DataFrame([[30, "basic", np.nan, "us"]], columns=list(features)))
    app = create_app(Settings(MODEL_STORE=store, DEFAULT_MODEL="churn"))
    with app.test_client() as client:
        meta = client.get("/v1/models/churn").get_json()
        answers = [
            protocols.seed(client, "churn", [ROW])[0],
            protocols.v1_ordered(client, "churn", [ROW])[0],
            protocols.v1_named(client, "churn", [ROW], list(features))[0],
            protocols.v2(client, "churn", [ROW], meta["features"], with_proba=True)[0],
        ]
    assert meta["runtime"] == "onnx"
    assert meta["sklearn_version"] == meta["serving_sklearn_version"]
    assert all(a == expected.tolist() for a in answers), answers


def test_positional_labels_refused_with_the_mapping_syntax(churn, capsys):
    _, _, directory, store = churn
    argv = ["publish", str(directory / "churn.joblib"), "--name", "churn2", "--store", str(store),
            "--data", str(directory / "train.csv"), "--target", "churn",
            "--labels", "stay,leave"]  # fmt: skip
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--labels leave=" in err


def _bad_cases(directory):  # noqa: ANN001, ANN202
    model_file, data = str(directory / "churn.joblib"), str(directory / "train.csv")
    (directory / "train.py").write_text("print('hi')\n")
    (directory / "notamodel.joblib").write_bytes(b"")
    joblib.dump({"a": 1}, directory / "dict.joblib")
    frame = pd.read_csv(data)
    frame.drop(columns="region").to_csv(directory / "noregion.csv", index=False)
    return [
        ([str(directory / "train.py")], "is source code, not a fitted model"),
        ([str(directory / "notamodel.joblib")], "not a readable joblib/pickle file"),
        ([str(directory / "dict.joblib")], "not a scikit-learn estimator"),
        ([model_file, "--data", data, "--target", "churn", "--sample", '[[30, "basic"]]'],
         "sample row 0 has 2 values; expected 4"),
        ([model_file, "--data", str(directory / "noregion.csv"), "--target", "churn"],
         "lacks feature column ['region']"),
        ([model_file, "--data", data, "--target", "age"],
         "is also one of the estimator's features"),
        ([model_file, "--features", "age,plan,spend,region"], 'feature "plan" is declared float'),
    ]  # fmt: skip


def test_clear_one_line_errors(churn, capsys):
    _, _, directory, store = churn
    for args, words in _bad_cases(directory):
        code = cli.main(["publish", *args, "--name", "bad", "--store", str(store)])
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1 and words in err, (args, err)
    assert not (store / "bad").exists()


def test_no_data_serves_with_sklearn_and_says_so(churn, capsys):
    _, _, directory, store = churn
    argv = ["publish", str(directory / "churn.joblib"), "--name", "nodata", "--store", str(store),
            "--features", "age:int,plan:string,spend,region:string",
            "--sample", '[[30, "basic", 10.0, "us"]]']  # fmt: skip
    assert cli.main(argv) == 0
    assert "unverified: no data given" in capsys.readouterr().out
