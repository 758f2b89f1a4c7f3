"""Fixtures that compose (demo store -> settings -> app -> client), and the test kinds.

Every test file lives in one of tests/unit (pure functions, no app), tests/app (the
in-process Flask test client), tests/stack (real servers: gunicorn, nginx, redis,
Prometheus...) or tests/deploy (compose/podman, kubectl, monitoring, the browser, load
runners). Each test gets its directory's marker here, so a file cannot forget one:
``pytest -m "unit or app"`` (``make test-fast``) is the inner loop.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from service.store import ModelStore

# Re-exported: ``from tests.conftest import IRIS_ROW`` keeps working; new code imports
# from tests.helpers.
from tests.helpers import IRIS_FEATURES, IRIS_ROW, IRIS_ROWS  # noqa: F401

if TYPE_CHECKING:
    from service.settings import Settings

# service.app and service.demo are imported inside the fixtures that use them: importing
# them here would make pytest-xdist's controller (which only loads this file) pay ~5 s
# of scikit-learn imports before it starts any worker.

TESTS = Path(__file__).resolve().parent
KINDS = ("unit", "app", "stack", "deploy")
# A unit test builds no app: these fixtures mean the file belongs in tests/app.
APP_FIXTURES = {"app", "client"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by its directory; refuse a test file outside the four kinds."""
    misplaced: set[str] = set()
    for item in items:
        path = Path(str(item.path)).resolve()
        try:
            kind = path.relative_to(TESTS).parts[0]
        except ValueError:  # a test outside tests/ (given on the command line)
            continue
        if kind not in KINDS:
            misplaced.add(
                f"{path.relative_to(TESTS.parent)}: not under tests/{{{','.join(KINDS)}}}/"
            )
            continue
        if kind == "unit" and APP_FIXTURES & set(getattr(item, "fixturenames", ())):
            misplaced.add(f"{item.nodeid}: uses the app; move it to tests/app/")
        item.add_marker(getattr(pytest.mark, kind))
    if misplaced:
        raise pytest.UsageError(
            "test files in the wrong place:\n  " + "\n  ".join(sorted(misplaced))
        )


# The signing key every test store is signed with and every test service verifies with.
TEST_SIGNING_KEY = b"test-signing-key-0123456789abcdef-0123456789"


@pytest.fixture(scope="session", autouse=True)
def signing_key_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The local signing key every test sees: the default file in a private config dir.

    Signing is on, as everywhere the stack ships. The user's real ~/.config is never
    read or written; a test (or a server it starts) that drops every PREDICTOR_*
    variable still finds this key where `predictor train-demo` would have created it.
    """
    config = tmp_path_factory.mktemp("xdg-config")
    path = config / "predictor" / "signing.key"
    path.parent.mkdir()
    path.write_bytes(TEST_SIGNING_KEY + b"\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_CONFIG_HOME", str(config))
        yield path


@pytest.fixture(autouse=True)
def _clean_predictor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PREDICTOR_* variable of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("PREDICTOR_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def demo_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pristine: only ever copied. Serving a store records its last-known-good versions in it.

    Trained once per run: under pytest-xdist the workers share one template (the first to
    take the lock trains it) instead of each training the demo models again.
    """
    from service.demo import train_demo

    shared = tmp_path_factory.getbasetemp()  # this run's directory...
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent  # ...which holds each xdist worker's own
    root = shared / "demo-store-template" / "models"
    with open(shared / "demo-store-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (shared / "demo-store-template.done").exists():
            shutil.rmtree(root.parent, ignore_errors=True)  # a worker that died mid-train
            train_demo(ModelStore(root), signing_key=TEST_SIGNING_KEY)
            (shared / "demo-store-template.done").touch()
    return root


@pytest.fixture(scope="session")
def demo_store(demo_store_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One session-wide copy of the demo store, for tests that only read and serve it."""
    target = tmp_path_factory.mktemp("demo-store-served") / "models"
    shutil.copytree(demo_store_template, target)
    return target


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
    from service.settings import Settings

    return Settings(MODEL_STORE=store_dir, MAX_ROWS=50, MAX_BODY_BYTES=64 * 1024)


@pytest.fixture
def app(settings: Settings):  # noqa: ANN201 - Flask app
    from service.app import create_app

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
