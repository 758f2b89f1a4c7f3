"""docs/extending.md's transport recipe, run as written: the module dropped into
service/protocols/ plus its name in PROTOCOLS serve MLflow's protocol, with access,
the protocol's error shape and the OpenAPI operation coming from the rest of the app."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from service import app as app_module
from service import http, protocols
from service.auth import hash_key
from service.settings import Settings

from ..conftest import IRIS_FEATURES, IRIS_ROW

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"
KEY = "k-mlflow-0123456789"


def _section(title: str) -> str:
    return DOC.read_text().split(f"## {title}", 1)[1].split("\n## ", 1)[0]


@pytest.fixture
def client(tmp_path, monkeypatch, demo_store):
    section = _section("Adding a transport")
    path = re.search(r"Save this as `([^`]+)`", section).group(1)
    assert path == "service/protocols/mlflow.py"
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    extra = tmp_path / "extra_protocols"
    extra.mkdir()
    (extra / "mlflow.py").write_text(code)
    monkeypatch.setattr(protocols, "__path__", [*protocols.__path__, str(extra)])
    monkeypatch.setattr(app_module, "PROTOCOLS", (*app_module.PROTOCOLS, "mlflow"))
    monkeypatch.setattr(http, "_ERROR_SHAPES", dict(http._ERROR_SHAPES))
    settings = Settings(MODEL_STORE=demo_store, API_KEYS=f"m:{hash_key(KEY)}")
    with app_module.create_app(settings).test_client() as c:
        yield c
    sys.modules.pop("service.protocols.mlflow", None)


def test_the_recipe_states_two_files():
    assert _section("Adding a transport").lstrip().startswith("**Files: 2**")
    for title in ("Adding a setting", "Adding a metric"):
        assert _section(title).lstrip().startswith("**Files: 2**")


def test_the_recipe_serves_mlflow(client):
    key = {"X-API-Key": KEY}
    frame = {"dataframe_split": {"columns": IRIS_FEATURES, "data": [IRIS_ROW]}}
    answer = client.post("/invocations", json=frame, headers=key)
    assert answer.status_code == 200 and answer.get_json() == {"predictions": ["setosa"]}
    rows = client.post("/invocations", json={"instances": [IRIS_ROW]}, headers=key)
    assert rows.get_json() == {"predictions": ["setosa"]}
    bad = client.post("/invocations", json={"dataframe_split": {"columns": IRIS_FEATURES[:3],
                                                                "data": [IRIS_ROW[:3]]}},
                      headers=key)  # fmt: skip
    assert bad.status_code == 400
    assert bad.get_json()["error_code"] == "BAD_REQUEST"
    assert "missing feature" in bad.get_json()["message"]
    no_key = client.post("/invocations", json=frame)
    assert no_key.status_code == 401 and no_key.get_json()["error_code"] == "BAD_REQUEST"
    wrong_method = client.get("/invocations")
    assert wrong_method.status_code == 405 and set(wrong_method.get_json()) == {
        "error_code",
        "message",
    }
    document = client.get("/openapi.json").get_json()
    op = document["paths"]["/invocations"]["post"]
    assert op["security"] == [{}, {"apiKey": []}, {"apiKeyBearer": []}]
    assert op["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MlflowError"
    }
    assert "Invocation" in document["components"]["schemas"]
