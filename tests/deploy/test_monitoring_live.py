"""Every dashboard panel, variable and rule expression, run against a real Prometheus.

A module fixture starts the real stack: two gunicorn instances of the service
(``a`` with a real Redis, ``b`` with a Redis address nobody answers, each on
its own copy of the demo store) and a real Prometheus that scrapes both every
second and evaluates monitoring/rules/ every second. It then drives traffic:
predictions on every route and model, repeated rows (cache hits), bad input,
unknown models; promotes version 2 of iris and diabetes on ``a`` with
``predictor promote`` (the service picks ``current`` up by polling); promotes a
corrupted version 3 of iris (refused: the load-failure counter moves) and asks
``a`` for that pinned version (503s).

Then every query goes through Prometheus's HTTP API, with Grafana's variables
substituted the way Grafana would (model and instance: "All"; the model-owner
variables resolved from their own queries), and each must return data.
The same Prometheus also runs the Kubernetes scrape job against file-discovered
targets that carry the labels Kubernetes pod discovery would give.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import REPO
from tools.stack import Gunicorn, Prometheus, RedisServer, StackError, free_port, wait_until

MONITORING = REPO / "monitoring"
CLI = REPO / ".venv" / "bin" / "predictor"
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))
IRIS_FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.0, 3.4, 1.5, 0.2]]
DIABETES_ROWS = [[round(0.01 * i * (j - 4), 3) for j in range(10)] for i in range(4)]

# What Grafana puts in for its own variables: a 5 minute dashboard range.
GRAFANA_TIME_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
RANGE_SECONDS = 300
# Series Prometheus itself makes; every other name must come from the service.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
TARGET_LABELS = {"job", "instance", "namespace", "pod", "node"}

# The pods Kubernetes discovery would report, as file-discovery targets: only the
# first may be scraped (the others: not annotated, not running, another app).
K8S_POD = "predictor-api-7c9d8-x2k4q"
K8S_SKIPPED = 3


# --------------------------------------------------------------------------
# the stack
# --------------------------------------------------------------------------


@dataclass
class Live:
    prometheus: Prometheus
    instances: dict[str, Gunicorn]
    http: requests.Session = field(default_factory=requests.Session)
    metrics_text: dict[str, str] = field(default_factory=dict)

    def api(self, path: str, **params: Any) -> Any:
        response = self.http.get(f"{self.prometheus.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr, time=time.time())
        return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]

    def wait_scraped(self) -> None:
        """Until Prometheus has scraped every api instance after this moment."""
        since = time.time()
        expr = f'count(timestamp(up{{job="api"}}) > {since}) == {len(self.instances)}'
        wait_until(
            lambda: bool(self.query(expr)), 15, "a scrape of every api instance", interval=0.2
        )

    def query_range(self, expr: str) -> list[dict]:
        now = time.time()
        data = self.api("query_range", query=expr, start=now - RANGE_SECONDS, end=now, step="15s")
        return data["result"]


def run_cli(*args: str) -> None:
    result = subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, f"predictor {' '.join(args)}:\n{result.stdout}{result.stderr}"


def publish_new_versions(store: Path) -> None:
    """Version 2 of iris and diabetes (other estimators, other outputs), and a version 3 of
    iris whose artifact is damaged after publishing: its digest no longer matches."""
    import joblib
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.linear_model import LogisticRegression, Ridge

    x, y = load_iris(return_X_y=True)
    iris = store.parent / "iris-v2.joblib"
    joblib.dump(LogisticRegression(C=0.02, max_iter=1000).fit(x, y), iris)
    x, y = load_diabetes(return_X_y=True)
    diabetes = store.parent / "diabetes-v2.joblib"
    joblib.dump(Ridge(alpha=0.5).fit(x, y), diabetes)
    iris_args = [
        "--features", ",".join(IRIS_FEATURES), "--labels", "setosa,versicolor,virginica",
        "--sample", str(IRIS_ROWS[:1]),
    ]  # fmt: skip
    run_cli("publish", str(iris), "--store", str(store), "--name", "iris", *iris_args)
    run_cli(
        "publish", str(diabetes), "--store", str(store), "--name", "diabetes",
        "--features", "age,sex,bmi,bp,s1,s2,s3,s4,s5,s6", "--sample", str(DIABETES_ROWS[:1]),
    )  # fmt: skip
    run_cli("publish", str(iris), "--store", str(store), "--name", "iris", *iris_args)
    for artifact in (store / "iris" / "3").iterdir():  # every runtime's artifact
        if artifact.name != "manifest.json":
            with open(artifact, "ab") as damaged:
                damaged.write(b"damaged in transit")


def prometheus_config(run: Path, targets: list[str], prometheus_port: int, pods: Path) -> Path:
    """monitoring/prometheus.yml made runnable here: scrape and evaluate every second, the
    api job on static loopback targets (no Compose DNS), plus the Kubernetes job reading
    file-discovered pods."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(MONITORING / r) for r in config["rule_files"]]
    for job in config["scrape_configs"]:
        if job["job_name"] == "api":
            assert job.pop("dns_sd_configs")[0]["names"] == ["api"]
            job["static_configs"] = [{"targets": targets}]
        if job["job_name"] == "prometheus":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{prometheus_port}"]}]
    k8s = yaml.safe_load((MONITORING / "prometheus-kubernetes.yml").read_text())
    (job,) = [j for j in k8s["scrape_configs"] if "kubernetes_sd_configs" in j]
    del job["kubernetes_sd_configs"]
    job["file_sd_configs"] = [{"files": [str(pods)], "refresh_interval": "1s"}]
    job["job_name"] = "kubernetes-api"
    # Only the annotation can make the path right, and the samples are dropped so
    # the instance is not counted twice by the dashboards.
    job["metrics_path"] = "/not-the-metrics-path"
    job["metric_relabel_configs"] = [
        {"source_labels": ["__name__"], "regex": ".+", "action": "drop"}
    ]
    config["scrape_configs"].append(job)
    path = run / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def kubernetes_pods(pods: Path, api_port: int) -> None:
    """What pod discovery would report: an api pod labelled and annotated as in
    k8s/base/api-deployment.yaml (tests/deploy/test_monitoring_rules.py holds the two together),
    its port annotation pointed at the local gunicorn; and pods to leave alone."""

    def pod(name: str, **changes: str) -> dict:
        meta = {
            "__meta_kubernetes_namespace": "predictor",
            "__meta_kubernetes_pod_name": name,
            "__meta_kubernetes_pod_node_name": "node-1",
            "__meta_kubernetes_pod_phase": "Running",
            "__meta_kubernetes_pod_label_app_kubernetes_io_name": "predictor",
            "__meta_kubernetes_pod_label_app_kubernetes_io_component": "api",
            "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
            "__meta_kubernetes_pod_annotation_prometheus_io_port": str(api_port),
            "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
            **changes,
        }
        # Pod discovery's address: pod IP and the declared container port.
        return {"targets": ["127.0.0.1:8000"], "labels": meta}

    groups = [
        pod(K8S_POD),
        pod("predictor-api-old-1", __meta_kubernetes_pod_annotation_prometheus_io_scrape="false"),
        pod("predictor-api-pending", __meta_kubernetes_pod_phase="Pending"),
        pod("redis-0", __meta_kubernetes_pod_label_app_kubernetes_io_name="redis"),
    ]
    pods.write_text(json.dumps(groups))


ERROR_SHARE = 0.12  # 503s sent, as a share of the API requests before them (alert: > 5%)
# The routes the recording rules leave out of "API requests" (probes and scrapes), as they say.
PROBE_ROUTES = set(
    re.search(r'route!~"([^"]+)"', (MONITORING / "rules" / "predictor-recording.yml").read_text())[
        1
    ].split("|")
)


def api_requests(http: requests.Session, url: str) -> int:
    """The API requests an instance counted (its workers' sum), probes and scrapes left out."""
    text = http.get(url + "/metrics", timeout=10).text
    return round(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "predictor_http_requests_total"
            and sample.labels.get("route") not in PROBE_ROUTES
        )
    )


def ask_refused_version(http: requests.Session, url: str, times: int, status: int = 503) -> None:
    """Pin iris version 3, damaged: 404 while the version policy does not serve it (not
    promoted), 503 (model not ready) once it is the current version and refused."""
    for _ in range(times):
        response = http.post(
            url + "/v1/models/iris/versions/3:predict", json={"instances": [IRIS_ROWS[0]]}
        )
        assert response.status_code == status, response.text


def drive_traffic(http: requests.Session, url: str) -> None:
    """Predictions on every route and model (rows repeat: cache hits), bad input, 404s."""

    def post(path: str, body: dict, expect: int) -> requests.Response:
        response = http.post(url + path, json=body, timeout=10)
        assert response.status_code == expect, (path, response.status_code, response.text)
        return response

    for i in range(12):
        post("/predict", {"input": IRIS_ROWS[i % 4]}, 200)
        post("/v1/models/iris-rf:predict", {"instances": [IRIS_ROWS[i % 4]]}, 200)
        post("/v1/models/diabetes:predict", {"instances": [DIABETES_ROWS[i % 4]]}, 200)
    post("/v1/models/iris:predict", {"instances": IRIS_ROWS * 5}, 200)
    post("/v1/models/diabetes:predict", {"instances": DIABETES_ROWS * 3}, 200)
    # Explanations (linear and TreeSHAP), so the explain panels have data too.
    for model, rows in (("iris", IRIS_ROWS), ("iris-rf", IRIS_ROWS), ("diabetes", DIABETES_ROWS)):
        post(f"/v1/models/{model}:explain", {"instances": rows[:2]}, 200)
    for _ in range(3):
        post("/predict", {"input": [5.1, 3.5]}, 400)
        post("/v1/models/nope:predict", {"instances": [IRIS_ROWS[0]]}, 404)
    assert http.get(url + "/no-such-route", timeout=10).status_code == 404


def serves(http: requests.Session, url: str, model: str, version: str) -> bool:
    row = IRIS_ROWS[1] if model == "iris" else DIABETES_ROWS[1]
    response = http.post(f"{url}/v1/models/{model}:predict", json={"instances": [row]}, timeout=5)
    return response.headers.get("X-Model-Version") == version


@pytest.fixture(scope="module")
def live(demo_store_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    run = tmp_path_factory.mktemp("monitoring-live")
    stores = {name: run / f"store-{name}" for name in ("a", "b")}
    for store in stores.values():
        shutil.copytree(demo_store_template, store)
    publish_new_versions(stores["a"])

    started: list[Any] = []
    try:
        redis = RedisServer(run).start()
        started.append(redis)
        # Every model uses Redis here, however cheap: the cache panels and alerts need it.
        shared = {"PREDICTOR_CACHE_SHARED_MIN_US": "0"}
        a = Gunicorn(
            run, stores["a"], redis_url=redis.url, workers=2, name="api-a", env=shared
        ).start()
        started.append(a)
        nobody = f"redis://127.0.0.1:{free_port()}/0"  # refused: the cache is unreachable
        b = Gunicorn(
            run, stores["b"], redis_url=nobody, workers=1, name="api-b", env=shared
        ).start()
        started.append(b)
        pods = run / "kubernetes-pods.json"
        kubernetes_pods(pods, a.port)
        port = free_port()
        config = prometheus_config(run, [a.address, b.address], port, pods)
        prometheus = Prometheus(run, config, port=port).start()
        started.append(prometheus)
        live = Live(prometheus, {"a": a, "b": b})
        http = live.http

        # Counter series are born at their first use, already above 0, and rate()
        # sees only what they gain after Prometheus first saw them: so every phase
        # ends with a scrape of both instances, and the next phase adds to it.
        live.wait_scraped()
        for instance in (a, b):
            drive_traffic(http, instance.url)
        ask_refused_version(http, a.url, 5, 404)  # iris 3 is not promoted yet: not served
        live.wait_scraped()
        # The promotion: a's store now says version 2.
        run_cli("promote", "--store", str(stores["a"]), "iris", "2")
        run_cli("promote", "--store", str(stores["a"]), "diabetes", "2")
        wait_until(lambda: serves(http, a.url, "iris", "2"), 15, "a serves iris version 2")
        wait_until(lambda: serves(http, a.url, "diabetes", "2"), 15, "a serves diabetes 2")
        # A canary: half of a's unpinned diabetes requests go back to version 1.
        run_cli("canary", "--store", str(stores["a"]), "diabetes", "1", "--percent", "50")
        wait_until(
            lambda: http.get(a.url + "/metrics").text.count("predictor_canary_percent{") >= 2,
            15,
            "both of a's workers run the diabetes canary",
        )
        for _ in range(20):  # both sides' series are born; the next phase adds to them
            serves(http, a.url, "diabetes", "2")
        live.wait_scraped()
        # A damaged version: refused, version 2 keeps serving.
        run_cli("promote", "--store", str(stores["a"]), "iris", "3")
        wait_until(
            lambda: "predictor_model_load_failures_total{" in http.get(a.url + "/metrics").text,
            15,
            "a refuses iris version 3",
        )
        assert serves(http, a.url, "iris", "2")
        # The 503 series is born here, and scraped, so rate() sees the ones that follow.
        ask_refused_version(http, a.url, 1)
        live.wait_scraped()
        for instance in (a, b):
            drive_traffic(http, instance.url)
        # Enough 503s for a 5xx share well above the alert's 5%, counted from what the
        # instances served: the polls above (waits for a swap) grow with the machine's load.
        total = sum(api_requests(http, g.url) for g in (a, b))
        ask_refused_version(http, a.url, max(25, math.ceil(total * ERROR_SHARE)))
        finished = time.time()

        # Prometheus has scraped after the last request, and the rules have seen it.
        expected = {
            "scraped after the traffic": f'min(timestamp(up{{job="api"}})) > {finished}',
            **{
                f"alert {name}": f'ALERTS{{alertname="{name}"}}'
                for name in (
                    "PredictorModelLoadFailed",
                    "PredictorHighErrorRatio",
                    "PredictorCacheUnreachable",
                    "PredictorModelVersionSkew",
                )
            },
        }
        missing = list(expected)

        def settled() -> bool:
            missing[:] = [what for what, expr in expected.items() if not live.query(expr)]
            return not missing

        try:
            wait_until(
                settled, 30, "Prometheus saw the last traffic and ran the rules", interval=0.25
            )
        except StackError as e:
            raise StackError(f"{e}; still missing: {missing}") from None
        live.metrics_text = {
            n: http.get(g.url + "/metrics").text for n, g in live.instances.items()
        }
        yield live
    except (StackError, AssertionError):
        for process in started:
            print(f"--- {process.name} log\n{process.log_tail(40)}")
        raise
    finally:
        for process in reversed(started):
            process.stop()


# --------------------------------------------------------------------------
# PromQL and Grafana helpers
# --------------------------------------------------------------------------


def grafana_format(values: list[str], multi: bool) -> str:
    """How Grafana's Prometheus datasource puts a variable's values into a query."""
    if not multi:
        return values[0]
    escaped = [re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(0), v) for v in values]
    return "(" + "|".join(escaped) + ")"


def substitute(text: str, values: dict[str, str]) -> str:
    merged = {**GRAFANA_TIME_VARIABLES, **values}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: merged[m.group(1)], text)


def variable_values(live: Live, variable: dict, values: dict[str, str]) -> list[str]:
    """The options Grafana would offer for a query variable."""
    query = substitute(variable["query"], values)
    if m := re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query):
        found = live.api(
            f"label/{m.group(2)}/values",
            **{"match[]": m.group(1), "start": time.time() - RANGE_SECONDS, "end": time.time()},
        )
    elif m := re.fullmatch(r"query_result\((.+)\)", query):
        # Grafana turns each sample into 'name{a="b"} value timestamp' and applies the regex.
        found = []
        for sample in live.query(m.group(1)):
            labels = ", ".join(f'{k}="{v}"' for k, v in sample["metric"].items())
            found.append(f"{{{labels}}} {sample['value'][1]} {sample['value'][0]}")
    else:
        raise AssertionError(f"unsupported variable query {query!r}")
    if variable.get("regex"):
        pattern = re.compile(variable["regex"].strip("/"))
        found = [m.group(1) for v in found if (m := pattern.search(v))]
    found = sorted(set(found))
    if variable.get("sort") == 4:
        found.sort(key=float, reverse=True)
    return found


def nodes(node: Any) -> Iterator[Any]:
    """Every node of a parsed PromQL expression."""
    yield node
    for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, str | int | float):
            yield from nodes(child)
    for child in getattr(node, "args", None) or []:
        yield from nodes(child)


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of every series selector in ``expr``."""
    found = []
    for node in nodes(promql_parser.parse(expr)):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            labels = {m.name for m in node.matchers.matchers}
            found.append((node.name, labels))
    return found


COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
SET_OPERATORS = {"and", "or", "unless"}


def operands(expr: str) -> list[str]:
    """The parts of an alert expression that must hold data when all is well.

    A comparison (``x > 0.05``) or ``absent(x)`` is legitimately empty while the
    service is healthy; what it tests must not be: the non-literal sides of each
    comparison, both sides of and/or/unless, and the argument of absent().
    """

    def walk(node: Any) -> list[Any]:
        if isinstance(node, promql_parser.ParenExpr):
            return walk(node.expr)
        if not any(isinstance(n, promql_parser.VectorSelector) for n in nodes(node)):
            return []  # a number, or arithmetic on numbers
        if isinstance(node, promql_parser.Call) and str(node).startswith("absent"):
            return walk(node.args[0])
        if isinstance(node, promql_parser.BinaryExpr):
            op = str(node.op)
            returns_bool = node.modifier is not None and node.modifier.return_bool
            if op in SET_OPERATORS or (op in COMPARISONS and not returns_bool):
                return walk(node.lhs) + walk(node.rhs)
        return [node]

    return [str(n) for n in walk(promql_parser.parse(expr))]


def rules() -> list[dict]:
    found = []
    for path in sorted((MONITORING / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            found.extend(group["rules"])
    return found


def panels(dash: dict) -> list[dict]:
    return [p for p in dash["panels"] if p["type"] != "row"]


def load_dashboard(path: Path) -> dict:
    return json.loads(path.read_text())


def run_target(live: Live, target: dict, values: dict[str, str]) -> list[dict]:
    """The series a panel query returns, as Grafana would run it; [] unless some value is a
    number (a ratio or quantile of no traffic is NaN: no data to show either)."""
    expr = substitute(target["expr"], values)
    result = live.query(expr) if target["instant"] else live.query_range(expr)
    return result if has_numbers(result) else []


def has_numbers(result: list[dict]) -> bool:
    """True when some sample of a query result is a number (not NaN, not empty)."""
    points = [p for series in result for p in series.get("values", [series.get("value")])]
    return any(math.isfinite(float(v)) for _, v in points)


def legend_labels_present(target: dict, result: list[dict]) -> list[str]:
    """Labels a legend names ({{label}}) that the returned series lack."""
    wanted = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target["legendFormat"]))
    return sorted({w for series in result for w in wanted if w not in series["metric"]})


# --------------------------------------------------------------------------
# the checks
# --------------------------------------------------------------------------


def test_prometheus_scrapes_every_api_instance(live):
    targets = live.api("targets")["activeTargets"]
    api = {t["labels"]["instance"]: t["health"] for t in targets if t["labels"]["job"] == "api"}
    assert api == {g.address: "up" for g in live.instances.values()}


def test_kubernetes_job_keeps_only_annotated_running_predictor_pods(live):
    """The Kubernetes relabeling, run by Prometheus on the labels pod discovery gives."""
    data = live.api("targets", state="any")
    active = [t for t in data["activeTargets"] if t["scrapePool"] == "kubernetes-api"]
    assert len(active) == 1, active
    (pod,) = active
    port = live.instances["a"].port
    # Port and path from the annotations, instance named after the pod.
    assert pod["scrapeUrl"] == f"http://127.0.0.1:{port}/metrics"
    assert pod["health"] == "up", pod["lastError"]
    assert pod["labels"]["instance"] == K8S_POD
    assert pod["labels"]["namespace"] == "predictor" and pod["labels"]["pod"] == K8S_POD
    dropped = [t for t in data["droppedTargets"] if "kubernetes" in str(t["discoveredLabels"])]
    assert len(dropped) == K8S_SKIPPED


def test_every_rule_loaded_and_evaluates_cleanly(live):
    groups = live.api("rules")["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    expected = {r.get("record") or r["alert"] for r in rules()}
    assert set(loaded) == expected
    for name, rule in loaded.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))


@pytest.mark.parametrize("rule", [r for r in rules() if "record" in r], ids=lambda r: r["record"])
def test_recording_rule_returns_data(live, rule):
    assert has_numbers(live.query(rule["expr"])), f"{rule['record']}: its expression: no data"
    assert has_numbers(live.query(rule["record"])), f"{rule['record']}: no recorded data"


@pytest.mark.parametrize("rule", [r for r in rules() if "alert" in r], ids=lambda r: r["alert"])
def test_alert_expression_returns_data(live, rule):
    """The expression itself when it holds; otherwise (healthy) every part it compares."""
    if live.query(rule["expr"]):
        return
    parts = operands(rule["expr"])
    assert parts, f"{rule['alert']}: nothing to evaluate"
    for part in parts:
        assert has_numbers(live.query(part)), f"{rule['alert']}: {part} returns no data"


def test_alerts_fire_on_the_real_service(live):
    """What happened to the stack shows up as alerts (pending until their `for` passes)."""
    active = {
        (a["labels"]["alertname"], a["state"]): a["labels"] for a in live.api("alerts")["alerts"]
    }
    refused = active[("PredictorModelLoadFailed", "firing")]
    assert (refused["model"], refused["version"]) == ("iris", "3")
    assert refused["instance"] == live.instances["a"].address
    cache = active[("PredictorCacheUnreachable", "pending")]
    assert cache["instance"] == live.instances["b"].address and cache["backend"] == "redis"
    assert ("PredictorModelVersionSkew", "pending") in active  # a serves 2, b serves 1
    assert ("PredictorHighErrorRatio", "pending") in active  # the refused pinned version
    names = {name for name, _ in active}
    assert "PredictorNoReadyInstance" not in names and "PredictorInstanceDown" not in names


def test_operator_dashboard_queries_return_data(live):
    dash = load_dashboard(MONITORING / "grafana" / "dashboards" / "predictor-operator.json")
    values: dict[str, str] = {}
    for variable in dash["templating"]["list"]:
        options = variable_values(live, variable, values)
        assert options, f"variable {variable['name']} has no options"
        values[variable["name"]] = grafana_format(options, variable["multi"])  # "All"
    assert set(values["instance"].strip("()").split("|")) == {
        g.address.replace(".", "\\\\.") for g in live.instances.values()
    }
    empty, legends = [], []
    for panel in panels(dash):
        for target in panel["targets"]:
            result = run_target(live, target, values)
            if not result:
                empty.append(f"{panel['title']} [{target['refId']}]: {target['expr']}")
            elif missing := legend_labels_present(target, result):
                legends.append(f"{panel['title']} [{target['refId']}]: no label {missing}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
    assert not legends, "\n".join(legends)


def test_model_owner_variables_find_current_and_previous_versions(live):
    dash = load_dashboard(MONITORING / "grafana" / "dashboards" / "predictor-model-owner.json")
    variables = dash["templating"]["list"]
    found = {}
    for model in ("iris", "diabetes"):
        values = {"model": model}
        for variable in variables[1:]:
            values[variable["name"]] = variable_values(live, variable, values)[0]
        found[model] = (values["current"], values["previous"])
    assert found == {"iris": ("2", "1"), "diabetes": ("2", "1")}


def test_model_owner_dashboard_queries_return_data(live):
    """Each panel has data for some model: the label panels for a classifier, the value
    panels for a regressor."""
    dash = load_dashboard(MONITORING / "grafana" / "dashboards" / "predictor-model-owner.json")
    variables = dash["templating"]["list"]
    model_variable = variables[0]
    per_model = []
    for model in variable_values(live, model_variable, {}):
        values = {"model": model}
        for variable in variables[1:]:
            options = variable_values(live, variable, values)
            values[variable["name"]] = options[0] if options else "none"
        per_model.append(values)
    assert {v["model"] for v in per_model} == {"iris", "iris-rf", "diabetes"}
    empty, legends = [], []
    for panel in panels(dash):
        answered = None
        for values in per_model:
            results = [run_target(live, t, values) for t in panel["targets"]]
            if all(results):
                answered = (values, results)
                break
        if answered is None:
            empty.append(panel["title"])
            continue
        for target, result in zip(panel["targets"], answered[1], strict=True):
            if missing := legend_labels_present(target, result):
                legends.append(f"{panel['title']} [{target['refId']}]: no label {missing}")
    assert not empty, f"panels without data for any model: {empty}"
    assert not legends, "\n".join(legends)


def monitoring_selectors() -> dict[str, list[tuple[str, set[str]]]]:
    """Where -> selectors, for every PromQL expression anywhere in monitoring/."""
    values = {"model": "m", "instance": "i", "current": "1", "previous": "2"}
    found: dict[str, list[tuple[str, set[str]]]] = {}
    for rule in rules():
        found[rule.get("record") or rule["alert"]] = selectors(rule["expr"])
    for path in DASHBOARDS:
        dash = load_dashboard(path)
        for panel in panels(dash):
            for target in panel["targets"]:
                found[f"{path.name}: {panel['title']}"] = selectors(
                    substitute(target["expr"], values)
                )
        for variable in dash["templating"]["list"]:
            query = substitute(variable["query"], values)
            inner = re.fullmatch(r"(?:label_values|query_result)\((.+?)(?:,\s*\w+)?\)", query)
            found[f"{path.name}: variable {variable['name']}"] = selectors(inner.group(1))
    for path in sorted((MONITORING / "tests").glob("*.yml")):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for series in case.get("input_series", []):
                found.setdefault(f"tests/{path.name}", []).extend(selectors(series["series"]))
    return found


def test_every_metric_name_in_monitoring_exists_in_the_service(live):
    """Parse the service's /metrics and every expression: no name or label is made up."""
    exposed: dict[str, set[str]] = {}
    for text in live.metrics_text.values():
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                exposed.setdefault(sample.name, set()).update(sample.labels)
    recorded = {r["record"] for r in rules() if "record" in r}
    unknown, bad_labels = [], []
    for where, found in monitoring_selectors().items():
        for name, labels in found:
            if name in recorded or name in PROMETHEUS_SERIES:
                continue
            if name not in exposed:
                unknown.append(f"{where}: {name}")
                continue
            extra = labels - exposed[name] - TARGET_LABELS - {"__name__"}
            if extra:
                bad_labels.append(f"{where}: {name} has no label {sorted(extra)}")
    assert not unknown, "metrics the service does not export:\n" + "\n".join(unknown)
    assert not bad_labels, "\n".join(bad_labels)
    # The check has teeth: the service's own families are all here, under their names.
    assert "predictor_http_request_duration_seconds_bucket" in exposed
    assert {"route", "method", "status", "le"} <= exposed[
        "predictor_http_request_duration_seconds_bucket"
    ]
