"""Fixtures that compose: demo store -> settings -> app -> client."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.app import create_app
from service.demo import train_demo
from service.settings import Settings
from service.store import ModelStore

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
IRIS_FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


@pytest.fixture(autouse=True)
def _clean_predictor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PREDICTOR_* variable of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("PREDICTOR_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def demo_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo-store") / "models"
    train_demo(ModelStore(root))
    return root


@pytest.fixture
def store_dir(demo_store_template: Path, tmp_path: Path) -> Path:
    """A private copy of the demo store (iris, iris-rf, diabetes; version 1 current)."""
    target = tmp_path / "models"
    shutil.copytree(demo_store_template, target)
    return target


@pytest.fixture
def store(store_dir: Path) -> ModelStore:
    return ModelStore(store_dir)


@pytest.fixture
def settings(store_dir: Path) -> Settings:
    return Settings(MODEL_STORE=store_dir, MAX_ROWS=50, MAX_BODY_BYTES=64 * 1024)


@pytest.fixture
def app(settings: Settings):  # noqa: ANN201 - Flask app
    return create_app(settings)


@pytest.fixture
def client(app) -> Iterator:  # noqa: ANN001
    with app.test_client() as c:
        yield c


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A real S3 server (SeaweedFS) on free loopback ports for the session; stopped by PID."""
    from tools.stack import SeaweedFS

    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(seaweedfs, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> dict:
    """AWS variables for the test's process, and a fresh s3:// store URI (one prefix per test)."""
    import uuid

    env = seaweedfs.aws_env()
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    uri = f"s3://predictor/{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"
    return {**env, "PREDICTOR_MODEL_STORE": uri}
