"""Grafana dashboards and provisioning, checked against Grafana's own schema.

The JSON Schemas come from npm ``@grafana/schema`` through
``ts-json-schema-generator`` (deps/npm-monitoring.sh writes them to
monitoring/.tools/schemas/): the Dashboard type, each panel plugin's Options
and FieldConfig, and the DataQuery every target extends. Whether each query
returns data is tests/deploy/test_monitoring_live.py's job.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.helpers import REPO

MONITORING = REPO / "monitoring"
SCHEMAS = MONITORING / ".tools" / "schemas"
DASHBOARD_DIR = MONITORING / "grafana" / "dashboards"
PROVISIONING = MONITORING / "grafana" / "provisioning"
DASHBOARDS = sorted(DASHBOARD_DIR.glob("*.json"))
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__all"}
# Keys a Prometheus query may carry on top of Grafana's DataQuery.
PROMETHEUS_QUERY_KEYS = {
    "expr", "legendFormat", "range", "instant", "format", "editorMode", "interval",
    "intervalFactor", "exemplar",
}  # fmt: skip


def schema(name: str) -> dict:
    path = SCHEMAS / f"{name}.json"
    assert path.is_file(), f"{path} missing: run bash deps/npm-monitoring.sh (make install-test)"
    return json.loads(path.read_text())


def validate(instance: object, name: str, where: str) -> None:
    validator = jsonschema.Draft7Validator(schema(name))
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        path = "/".join(map(str, best.absolute_path))
        raise AssertionError(f"{where}: not a valid Grafana {name} at /{path}: {best.message}")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def panels_of(dash: dict) -> list[dict]:
    """Every panel, rows' nested panels included, rows themselves left out."""
    found = []
    for panel in dash.get("panels", []):
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def datasource_uid() -> str:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = doc["datasources"]
    return source["uid"]


@pytest.fixture(params=DASHBOARDS, ids=lambda p: p.name)
def dash(request) -> dict:
    return load(request.param)


def test_there_are_two_dashboards():
    assert {p.name for p in DASHBOARDS} == {
        "predictor-operator.json",
        "predictor-model-owner.json",
    }


def test_dashboards_are_built_from_the_generator():
    result = subprocess.run(
        [sys.executable, str(MONITORING / "grafana" / "build_dashboards.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_dashboard_matches_grafana_schema(dash):
    validate(dash, "Dashboard", dash["title"])


def test_panel_options_match_their_plugin_schema(dash):
    for panel in panels_of(dash):
        where = f"{dash['title']} / {panel['title']}"
        kind = panel["type"]
        assert (SCHEMAS / f"{kind}.Options.json").is_file(), (
            f"{where}: no schema for panel type {kind!r}; add it to PANELS in "
            "deps/npm-monitoring.sh"
        )
        validate(panel["options"], f"{kind}.Options", where)
        custom = panel["fieldConfig"]["defaults"].get("custom")
        if (SCHEMAS / f"{kind}.FieldConfig.json").is_file():
            validate(custom or {}, f"{kind}.FieldConfig", where)
        else:
            assert custom is None, f"{where}: {kind} panels have no custom field options"


def test_targets_are_prometheus_queries_on_the_provisioned_datasource(dash):
    uid = datasource_uid()
    data_query = schema("DataQuery")
    # A datasource's query extends DataQuery: allow its own keys, then check them below.
    data_query["definitions"]["DataQuery"]["additionalProperties"] = True
    for panel in panels_of(dash):
        where = f"{dash['title']} / {panel['title']}"
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, where
        assert panel["targets"], f"{where}: no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{where}: duplicate refId"
        for t in panel["targets"]:
            jsonschema.validate(t, data_query)
            extra = set(t) - {"refId", "datasource", "hide", "queryType"} - PROMETHEUS_QUERY_KEYS
            assert not extra, f"{where}: unknown query keys {extra}"
            assert t["datasource"] == {"type": "prometheus", "uid": uid}, where
            assert t["expr"].strip(), f"{where}: empty expr"
            assert t["format"] in {"time_series", "table", "heatmap"}, where
    for variable in dash["templating"]["list"]:
        assert variable["datasource"] == {"type": "prometheus", "uid": uid}, variable["name"]


def test_every_variable_used_is_defined(dash):
    defined = {v["name"] for v in dash["templating"]["list"]} | BUILTIN_VARIABLES
    texts = [t["expr"] for p in panels_of(dash) for t in p["targets"]]
    texts += [v["query"] for v in dash["templating"]["list"]]
    used = {m for text in texts for m in re.findall(r"\$\{?(\w+)", text)}
    assert used <= defined, f"undefined variables: {used - defined}"


def test_grid_has_unique_ids_and_no_overlap(dash):
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_operator_dashboard_has_model_and_instance_variables():
    dash = load(DASHBOARD_DIR / "predictor-operator.json")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert {"model", "instance"} <= set(variables)
    for name in ("model", "instance"):
        assert variables[name]["multi"] and variables[name]["includeAll"]


def test_model_owner_dashboard_compares_current_and_previous_versions():
    dash = load(DASHBOARD_DIR / "predictor-model-owner.json")
    assert {"model", "current", "previous"} <= {v["name"] for v in dash["templating"]["list"]}
    exprs = [t["expr"] for p in panels_of(dash) for t in p["targets"]]
    assert any("$current" in e for e in exprs) and any("$previous" in e for e in exprs)


def test_the_schema_rejects_a_broken_dashboard():
    """The validation above can fail: Grafana's schema is strict about keys and enums."""
    good = load(DASHBOARD_DIR / "predictor-operator.json")
    panel = panels_of(good)[0]
    broken = copy.deepcopy(good)
    broken["panels"][1]["gridPos"]["widht"] = 3  # typo
    with pytest.raises(AssertionError, match="not a valid Grafana Dashboard"):
        validate(broken, "Dashboard", "broken")
    broken = copy.deepcopy(good)
    del broken["schemaVersion"]
    with pytest.raises(AssertionError, match="schemaVersion"):
        validate(broken, "Dashboard", "broken")
    options = copy.deepcopy(panel["options"])
    options["colorMode"] = "rainbow"
    with pytest.raises(AssertionError, match="rainbow"):
        validate(options, f"{panel['type']}.Options", "broken")
    series = next(p for p in panels_of(good) if p["type"] == "timeseries")
    custom = dict(series["fieldConfig"]["defaults"]["custom"], lineWidht=2)
    with pytest.raises(AssertionError, match="lineWidht"):
        validate(custom, "timeseries.FieldConfig", "broken")


# --------------------------------------------------------------------------
# provisioning
# --------------------------------------------------------------------------


def test_datasource_provisioning():
    doc = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert doc["apiVersion"] == 1
    (source,) = doc["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    # $__rate_interval is derived from this: it must be the scrape interval.
    scrape = yaml.safe_load((MONITORING / "prometheus.yml").read_text())["global"]
    assert source["jsonData"]["timeInterval"] == scrape["scrape_interval"]


def test_dashboard_provisioning_points_where_compose_mounts_the_dashboards():
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "predictor.yml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    grafana = compose["grafana"]["volumes"]
    assert f"./monitoring/grafana/dashboards:{path}:ro" in grafana
    assert "./monitoring/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    prometheus = compose["prometheus"]["volumes"]
    assert "./monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus
    assert "./monitoring/rules:/etc/prometheus/rules:ro" in prometheus


def test_docs_have_a_line_per_panel():
    docs = (REPO / "docs" / "monitoring.md").read_text()
    lines = {line.split("|")[1].strip() for line in docs.splitlines() if line.startswith("| ")}
    missing = [
        f"{path.name}: {panel['title']}"
        for path in DASHBOARDS
        for panel in panels_of(load(path))
        if panel["title"] not in lines
    ]
    assert not missing, f"docs/monitoring.md has no line for: {missing}"
