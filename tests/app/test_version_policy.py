"""Versions load only by policy: current, warm (settings), admin-loaded. Requests never load."""

from __future__ import annotations

import pytest

from service.app import create_app
from service.auth import hash_key
from service.settings import Settings
from service.store import ModelStore
from tests.conftest import IRIS_ROW
from tools.attacks import copy_version, plant_version, tamper

TOKEN = "policy-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
KEY = "alice-key-0123456789"


def _signed_copy(store: ModelStore, version: str) -> None:
    from service.manifest import Manifest
    from service.signing import sign
    from tests.conftest import TEST_SIGNING_KEY

    directory = copy_version(store, "iris", "1", version)
    manifest = tamper(directory, version=version)
    manifest.signature = sign(TEST_SIGNING_KEY, manifest.signed_fields())
    manifest.write(directory)
    assert Manifest.read(directory).version == version


def _loads(app, monkeypatch) -> list[tuple[str, str]]:  # noqa: ANN001
    registry = app.extensions["predictor"].registry
    calls: list[tuple[str, str]] = []
    real = registry.load_version

    def counting(name: str, version: str):  # noqa: ANN202
        calls.append((name, version))
        return real(name, version)

    monkeypatch.setattr(registry, "load_version", counting)
    return calls


def test_version_get_routes_never_load_a_planted_version(store_dir, tmp_path, monkeypatch):
    """The attack: GET .../versions/2/ready loaded any version in the store, unauthenticated."""
    store = ModelStore(store_dir)
    marker = tmp_path / "code-ran"
    plant_version(store, "iris", "2", marker)  # timeit payload, never promoted
    app = create_app(Settings(MODEL_STORE=store_dir, ADMIN_TOKEN=TOKEN))
    calls = _loads(app, monkeypatch)
    client = app.test_client()
    for _ in range(3):
        ready = client.get("/v2/models/iris/versions/2/ready")
        assert ready.status_code == 404
        assert "is not served; servable versions: 1" in ready.get_json()["error"]
        meta = client.get("/v2/models/iris/versions/2")
        assert meta.status_code == 200 and meta.get_json()["versions"] == ["2"]
        pinned = client.post("/v1/models/iris/versions/2:predict", json={"instances": [IRIS_ROW]})
        assert pinned.status_code == 404
        assert pinned.get_json()["error"]["code"] == "version_not_served"
        infer = client.post("/v2/models/iris/versions/2/infer", json={"inputs": []})
        assert infer.status_code == 404
        assert client.get("/v1/models/iris").status_code == 200
    app.extensions["predictor"].registry.refresh()
    assert calls == [] and not marker.exists()


def test_warm_versions_load_at_start_and_serve_pinned(store_dir):
    store = ModelStore(store_dir)
    _signed_copy(store, "2")
    _signed_copy(store, "3")
    app = create_app(Settings(MODEL_STORE=store_dir, WARM_VERSIONS="iris@2"))
    client = app.test_client()
    assert client.get("/v2/models/iris/versions/2/ready").get_json()["ready"] is True
    body = client.post("/v1/models/iris/versions/2:predict", json={"instances": [IRIS_ROW]})
    assert body.status_code == 200 and body.headers["X-Model-Version"] == "2"
    three = client.post("/v1/models/iris/versions/3:predict", json={"instances": [IRIS_ROW]})
    assert (
        three.status_code == 404
        and "servable versions: 1, 2" in three.get_json()["error"]["message"]
    )
    latest = create_app(Settings(MODEL_STORE=store_dir, WARM_VERSIONS="*@latest:2"))
    c = latest.test_client()
    assert [c.get(f"/v2/models/iris/versions/{v}/ready").status_code for v in "123"] == [
        200, 200, 200,
    ]  # fmt: skip  # 1 is current, 2 and 3 the newest two


def test_admin_load_of_a_version_serves_it_until_unloaded(store_dir):
    _signed_copy(ModelStore(store_dir), "2")
    app = create_app(Settings(MODEL_STORE=store_dir, ADMIN_TOKEN=TOKEN))
    client = app.test_client()
    url = "/v1/models/iris/versions/2:predict"
    assert client.post(url, json={"instances": [IRIS_ROW]}).status_code == 404
    body = {"parameters": {"version": "2"}}
    load = client.post("/v2/repository/models/iris/load", json=body, headers=ADMIN)
    assert load.status_code == 200 and load.get_json()["version"] == "2"
    assert client.post(url, json={"instances": [IRIS_ROW]}).status_code == 200
    assert client.post("/v2/repository/models/iris/load", json=body).status_code == 401
    unload = client.post("/v2/repository/models/iris/unload", json=body, headers=ADMIN)
    assert unload.status_code == 200
    assert client.post(url, json={"instances": [IRIS_ROW]}).status_code == 404
    assert client.post("/predict", json={"input": IRIS_ROW}).get_json()["version"] == "1"


def test_admin_load_of_a_planted_version_is_refused_and_runs_nothing(store_dir, tmp_path):
    marker = tmp_path / "code-ran"
    plant_version(ModelStore(store_dir), "iris", "2", marker)
    app = create_app(Settings(MODEL_STORE=store_dir, ADMIN_TOKEN=TOKEN))
    client = app.test_client()
    answer = client.post(
        "/v2/repository/models/iris/load", json={"parameters": {"version": "2"}}, headers=ADMIN
    )
    assert answer.status_code == 422 and "unsigned" in answer.get_json()["error"]
    ready = client.get("/v2/models/iris/versions/2/ready")
    assert ready.status_code == 503 and "refused" in ready.get_json()["reason"]
    assert not marker.exists()


def test_a_refused_warm_version_is_not_retried_until_it_changes(store_dir, tmp_path, monkeypatch):
    store = ModelStore(store_dir)
    marker = tmp_path / "code-ran"
    plant_version(store, "iris", "2", marker)
    app = create_app(Settings(MODEL_STORE=store_dir, WARM_VERSIONS="iris@2"))
    calls = _loads(app, monkeypatch)
    client = app.test_client()
    registry = app.extensions["predictor"].registry
    for _ in range(5):
        registry.refresh()
        answer = client.post("/v1/models/iris/versions/2:predict", json={"instances": [IRIS_ROW]})
        assert answer.status_code == 503 and "refused" in answer.get_json()["error"]["message"]
    assert calls == []  # refused once at start, never again
    tamper(store.version_dir("iris", "2"), description="changed")
    registry.refresh()
    registry.refresh()
    assert calls == [("iris", "2")] and not marker.exists()


@pytest.mark.parametrize(
    "url",
    [
        "/v2/models/iris/versions/1",
        "/v2/models/iris/versions/1/ready",
        "/v2/models/iris/versions/2/ready",
    ],
)
def test_version_routes_need_the_api_key(store_dir, url):
    app = create_app(Settings(MODEL_STORE=store_dir, API_KEYS=f"alice:{hash_key(KEY)}"))
    client = app.test_client()
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"X-API-Key": KEY}).status_code in (200, 404)
    assert client.get("/v2/models/iris").status_code == 200  # unpinned metadata stays open
