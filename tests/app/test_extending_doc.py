"""docs/extending.md's runtime recipe, run as written: one file dropped into the
package makes a runtime that settings accept and the service serves with."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from service import runtimes
from service.app import create_app
from service.publish import features_for, publish_estimator
from service.runtimes import base
from service.settings import Settings
from service.store import ModelStore

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"
MODULE = "sklearn_single_thread"
NAME = "sklearn-single-thread"


def _recipe() -> tuple[str, str]:
    """The file the recipe says to write, and the code block that is that file."""
    section = DOC.read_text().split("## Adding a runtime", 1)[1].split("\n## ", 1)[0]
    path = re.search(r"save it as\s+`([^`]+)`", section).group(1)
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return path, code


@pytest.fixture
def dropped_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The recipe's file in a directory the package searches, as if saved in it."""
    path, code = _recipe()
    assert path == f"service/runtimes/{MODULE}.py"
    extra = tmp_path / "extra_runtimes"
    extra.mkdir()
    (extra / f"{MODULE}.py").write_text(code)
    monkeypatch.setattr(runtimes, "__path__", [*runtimes.__path__, str(extra)])
    monkeypatch.setattr(base, "_discovered", False)
    yield
    base.unregister(NAME)
    sys.modules.pop(f"service.runtimes.{MODULE}", None)


def test_the_recipe_states_one_file() -> None:
    section = DOC.read_text().split("## Adding a runtime", 1)[1]
    assert section.lstrip().startswith("**Files: 1**")


def test_the_recipe_file_serves_by_name(dropped_in, tmp_path: Path) -> None:
    assert NAME in runtimes.names()
    assert f"auto|onnx|sklearn|{NAME}" in "|".join(runtimes.choices())
    X, y = load_iris(return_X_y=True)
    estimator = LogisticRegression(max_iter=500).fit(X, y)
    store = tmp_path / "models"
    publish_estimator(
        ModelStore(store),
        estimator,
        name="iris",
        promote=True,
        features=features_for(estimator, ["sl", "sw", "pl", "pw"]),
        sample_input=X[:2].tolist(),
        compile_graph=False,
    )
    client = create_app(Settings(MODEL_STORE=store, RUNTIME=NAME)).test_client()
    assert client.get("/v1/models/iris").get_json()["runtime"] == NAME
    answer = client.post("/v1/models/iris:predict", json={"instances": X[:3].tolist(),
                                                          "probabilities": True})  # fmt: skip
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    # The model's own classes (integers here), as estimator.predict answers them.
    assert body["predictions"] == estimator.predict(X[:3]).tolist()
    assert len(body["probabilities"]) == 3
