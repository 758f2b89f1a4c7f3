"""`predictor publish` of a skops file: what it would construct is listed, and refused unless
the publisher vouches for it; code-running callables are refused even then."""

from __future__ import annotations

from pathlib import Path

import pytest
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from service.cli import main
from service.manifest import Manifest
from service.publish import PublishError, publish_estimator
from service.store import ModelStore
from tools.attacks import CODE_RUNNERS, evil_skops

X, Y = load_iris(return_X_y=True)
FEATURES = "a,b,c,d"


@pytest.fixture(scope="module")
def lr_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("publish") / "lr.skops"
    sio.dump(LogisticRegression(max_iter=500).fit(X, Y), path)
    return path


def _publish(store: Path, file: Path, *extra: str) -> int:
    return main(["publish", str(file), "--store", str(store), "--name", "m",
                 "--features", FEATURES, "--no-compile", *extra])  # fmt: skip


@pytest.mark.parametrize("runner", CODE_RUNNERS)
def test_publish_evil_skops_runs_nothing_with_or_without_trust(tmp_path, lr_file, capsys, runner):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.skops"
    evil_skops(lr_file, evil, marker, runner)
    assert _publish(tmp_path / "models", evil) == 1
    err = capsys.readouterr().err
    assert runner in err and "never trusted" in err and err.count("\n") == 1
    assert _publish(tmp_path / "models", evil, "--trust", runner) == 1
    assert "never trusted" in capsys.readouterr().err
    assert not marker.exists()
    assert ModelStore(tmp_path / "models").versions("m") == []


def test_publish_skops_lists_types_and_needs_trust_for_each(tmp_path, capsys):
    forest = tmp_path / "forest.skops"
    sio.dump(RandomForestClassifier(n_estimators=3, random_state=0).fit(X, Y), forest)
    store = tmp_path / "models"
    assert _publish(store, forest) == 1
    err = capsys.readouterr().err
    assert "sklearn.tree._tree.Tree" in err and "--trust sklearn.tree._tree.Tree" in err
    assert _publish(store, forest, "--trust", "sklearn.tree._tree.Tree") == 0
    assert "trusted types recorded: sklearn.tree._tree.Tree" in capsys.readouterr().out
    manifest = ModelStore(store).manifest("m", "1")
    assert manifest.trusted_types == ["sklearn.tree._tree.Tree"] and manifest.signature


def test_publish_allow_listed_skops_needs_no_trust(tmp_path, lr_file, capsys):
    assert _publish(tmp_path / "models", lr_file) == 0
    manifest: Manifest = ModelStore(tmp_path / "models").manifest("m", "1")
    assert manifest.trusted_types == [] and manifest.signature
    assert set(manifest.files) == {"model.skops"}


class Custom(LogisticRegression):
    """A publisher's own estimator class: outside the allow-list."""


def test_python_api_needs_trust_for_custom_types(tmp_path):
    store = ModelStore(tmp_path / "models")
    est = Custom(max_iter=500).fit(X, Y)
    name = f"{Custom.__module__}.Custom"
    with pytest.raises(PublishError, match=f"--trust {name}"):
        publish_estimator(store, est, name="c", compile_graph=False,
                          features=_features())  # fmt: skip
    manifest = publish_estimator(store, est, name="c", compile_graph=False,
                                 features=_features(), trust=[name])  # fmt: skip
    assert manifest.trusted_types == [name] and manifest.signature


def _features():  # noqa: ANN202
    from service.manifest import Feature

    return [Feature(name=n) for n in FEATURES.split(",")]
