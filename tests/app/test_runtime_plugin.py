"""A runtime defined and registered in a test serves by name: no other module changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from service import runtimes
from service.app import create_app
from service.publish import features_for, publish_estimator
from service.settings import Settings
from service.store import ModelStore


class CountingRuntime(runtimes.Runtime):
    """Serves the published estimator and counts the rows it was asked about."""

    name = "counting"
    capabilities = runtimes.Capabilities(
        probabilities=False, missing_values=True, needs_estimator=True
    )
    rows_seen = 0

    def __init__(self, estimator) -> None:  # noqa: ANN001
        self.estimator = estimator

    @classmethod
    def load(cls, version_dir: Path, manifest, settings) -> CountingRuntime:  # noqa: ANN001
        from service.artifacts import load_estimator

        estimator = load_estimator(
            version_dir, manifest, settings.signing_key, settings.ALLOW_UNSIGNED_PICKLE
        )
        return cls(estimator)

    def run(self, rows: np.ndarray, with_proba: bool) -> tuple[np.ndarray, np.ndarray | None]:
        CountingRuntime.rows_seen += len(rows)
        return self.estimator.predict(rows), None


@pytest.fixture
def counting():
    runtimes.register(CountingRuntime)
    CountingRuntime.rows_seen = 0
    yield CountingRuntime
    runtimes.base.unregister(CountingRuntime.name)


@pytest.fixture
def iris_store(tmp_path: Path) -> Path:
    X, y = load_iris(return_X_y=True)
    estimator = LogisticRegression(max_iter=500).fit(X, y)
    publish_estimator(
        ModelStore(tmp_path),
        estimator,
        name="iris",
        promote=True,
        features=features_for(estimator, ["sl", "sw", "pl", "pw"]),
        sample_input=X[:2].tolist(),
        compile_graph=False,
        output_labels=["setosa", "versicolor", "virginica"],
    )
    return tmp_path


def test_a_registered_runtime_is_chosen_by_name(counting, iris_store) -> None:
    assert "counting" in runtimes.names()
    settings = Settings(MODEL_STORE=iris_store, CACHE_ENABLED=False, RUNTIME="counting")
    client = create_app(settings).test_client()
    meta = client.get("/v1/models/iris").get_json()
    assert meta["runtime"] == "counting"
    assert meta["runtime_reason"] == "runtime counting chosen by settings"
    seen = counting.rows_seen  # the load-time smoke test and timing ran through it too
    answer = client.post("/predict", json={"input": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})
    assert answer.status_code == 200, answer.get_json()
    # The model's own classes (0..2); output_labels are display names, not answers.
    assert answer.get_json()["prediction"] == [0, 2]
    assert counting.rows_seen == seen + 2
    # It declares no probabilities, so V2 offers only the predict output.
    v2 = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                      "data": [5.1, 3.5, 1.4, 0.2]}],
          "outputs": [{"name": "predict_proba"}]}  # fmt: skip
    refused = client.post("/v2/models/iris/infer", json=v2)
    assert refused.status_code == 400 and "predict_proba" in str(refused.get_json())


def test_auto_never_picks_a_runtime_that_did_not_opt_in(counting, iris_store) -> None:
    client = create_app(Settings(MODEL_STORE=iris_store, CACHE_ENABLED=False)).test_client()
    meta = client.get("/v1/models/iris").get_json()
    assert meta["runtime"] == "sklearn"
    assert meta["runtime_reason"] == "no compiled graph was published"
    assert counting.rows_seen == 0


def test_per_model_override_names_it_too(counting, iris_store) -> None:
    settings = Settings(MODEL_STORE=iris_store, RUNTIME_OVERRIDES="iris=counting")
    assert settings.runtime_for("iris") == "counting"
    assert settings.runtime_for("other") == "auto"
