"""Prometheus configs and rules: promtool checks them, and its unit tests prove each alert.

- ``promtool check config`` on every Prometheus config in monitoring/ (the
  Kubernetes one with its pod discovery swapped for file discovery: Debian's
  Prometheus 2.42 is built without Kubernetes discovery, see RUNNING-HERE.md);
- ``promtool check rules`` and ``promtool test rules`` (monitoring/tests/*.yml);
- each alert has a unit test that makes it fire and one that keeps it quiet,
  and those tests bite: with the alert broken to never fire, its firing tests
  fail; broken to always fire, its quiet tests fail.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

MONITORING = REPO / "monitoring"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
UNIT_TESTS = sorted((MONITORING / "tests").glob("*.yml"))
CONFIGS = ["prometheus.yml", "prometheus-local.yml"]
K8S_CONFIG = MONITORING / "prometheus-kubernetes.yml"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: install the Debian package prometheus (make install-test)"
    return path


def run_promtool(*args: str | Path, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def alerts() -> dict[str, dict]:
    """Every alerting rule of monitoring/rules/, by name."""
    found = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    assert rule["alert"] not in found, f"alert {rule['alert']} defined twice"
                    found[rule["alert"]] = rule
    return found


def unit_test_cases() -> list[tuple[Path, dict]]:
    return [
        (path, case) for path in UNIT_TESTS for case in yaml.safe_load(path.read_text())["tests"]
    ]


def test_there_are_rules_and_unit_tests():
    assert len(RULE_FILES) >= 2 and len(UNIT_TESTS) >= 4
    assert set(alerts()) >= {
        "PredictorHighErrorRatio",
        "PredictorLatencyBudgetBurnFast",
        "PredictorLatencyBudgetBurnSlow",
        "PredictorNoReadyInstance",
        "PredictorCacheUnreachable",
        "PredictorModelLoadFailed",
        "PredictorModelVersionSkew",
    }


@pytest.mark.parametrize("name", CONFIGS)
def test_promtool_check_config(name):
    result = run_promtool("check", "config", name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout  # the rule glob matched


def kubernetes_config_with_file_sd(targets_file: Path) -> dict:
    """The Kubernetes config with pod discovery replaced by file discovery.

    Same scrape job, same relabeling: what promtool and a Debian Prometheus can load.
    """
    config = yaml.safe_load(K8S_CONFIG.read_text())
    (job,) = [j for j in config["scrape_configs"] if "kubernetes_sd_configs" in j]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    del job["kubernetes_sd_configs"]
    job["file_sd_configs"] = [{"files": [str(targets_file)], "refresh_interval": "1s"}]
    return config


def test_promtool_check_kubernetes_config(tmp_path):
    config = kubernetes_config_with_file_sd(tmp_path / "pods.json")
    config["rule_files"] = [str(MONITORING / r) for r in config["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = run_promtool("check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_scrape_job_reads_the_pod_annotations():
    job = next(
        j
        for j in yaml.safe_load(K8S_CONFIG.read_text())["scrape_configs"]
        if j["job_name"] == "api"
    )
    sources = {s for r in job["relabel_configs"] for s in r.get("source_labels", [])}
    for annotation in ("scrape", "port", "path"):
        assert f"__meta_kubernetes_pod_annotation_prometheus_io_{annotation}" in sources


def test_promtool_check_rules():
    result = run_promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    result = run_promtool("test", "rules", *UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    fire, quiet = set(), set()
    for _, case in unit_test_cases():
        for check in case.get("alert_rule_test", []):
            (fire if check.get("exp_alerts") else quiet).add(check["alertname"])
    missing = {name: [] for name in alerts()}
    for name in missing:
        if name not in fire:
            missing[name].append("no test that makes it fire")
        if name not in quiet:
            missing[name].append("no test that keeps it quiet")
    assert not {k: v for k, v in missing.items() if v}


def _mutated_run(tmp_path: Path, alert: str, expr: str, firing_cases: bool) -> str:
    """Run only ``alert``'s firing (or quiet) checks against rules where its expr is ``expr``."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir(parents=True)
    for path in RULE_FILES:
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == alert:
                    rule["expr"] = expr
                    rule.pop("for", None)
        (rules_dir / path.name).write_text(yaml.safe_dump(doc))
    selected = []
    for _, case in unit_test_cases():
        checks = [
            c
            for c in case.get("alert_rule_test", [])
            if c["alertname"] == alert and bool(c.get("exp_alerts")) == firing_cases
        ]
        if checks:
            case = copy.deepcopy(case)
            case.pop("promql_expr_test", None)
            case["alert_rule_test"] = checks
            selected.append(case)
    assert selected
    test_file = tmp_path / "unit.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(p) for p in sorted(rules_dir.glob("*.yml"))],
                "evaluation_interval": "1m",
                "tests": selected,
            }
        )
    )
    result = run_promtool("test", "rules", test_file, cwd=tmp_path)
    return result.stdout + result.stderr if result.returncode != 0 else ""


@pytest.mark.parametrize("alert", sorted(alerts()))
def test_unit_tests_catch_a_broken_alert(alert, tmp_path):
    # Never fires: every check that expects it firing must fail.
    never = _mutated_run(tmp_path / "never", alert, "vector(1) > 2", firing_cases=True)
    assert f"alertname: {alert}," in never and "got:[]" in never, (
        f"{alert}: its firing tests pass with an alert that never fires\n{never}"
    )
    # Always fires: every check that expects silence must fail.
    always = _mutated_run(tmp_path / "always", alert, "vector(1)", firing_cases=False)
    assert f"alertname: {alert}," in always and "exp:[]" in always, (
        f"{alert}: its quiet tests pass with an alert that always fires\n{always}"
    )


def test_docs_have_a_line_per_alert():
    docs = (REPO / "docs" / "monitoring.md").read_text()
    lines = {line.split("|")[1].strip() for line in docs.splitlines() if line.startswith("| ")}
    assert set(alerts()) <= lines, f"no line in docs/monitoring.md for {set(alerts()) - lines}"


def test_kubernetes_api_pods_carry_what_the_scrape_job_keeps():
    """k8s/'s api pods: the label the job keeps, and annotations naming the real port."""
    manifest = REPO / "k8s" / "base" / "api-deployment.yaml"
    assert manifest.is_file(), f"{manifest} is missing: the api Deployment to cross-check"
    docs = yaml.safe_load_all(manifest.read_text())
    (deployment,) = [d for d in docs if d and d["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    job = next(
        j
        for j in yaml.safe_load(K8S_CONFIG.read_text())["scrape_configs"]
        if j["job_name"] == "api"
    )
    kept_name = next(
        r["regex"]
        for r in job["relabel_configs"]
        if r.get("source_labels") == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    )
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == kept_name
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    ports = {p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    assert int(annotations["prometheus.io/port"]) in ports
