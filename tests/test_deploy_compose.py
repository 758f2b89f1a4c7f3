"""docker-compose.yml, run for real: podman serves the Docker API, the Compose v2
binary drives it, local stand-in images replace the registry ones
(compose/local-stack.sh; docs/deploy.md).

One stack per module, on free host ports and its own project name, so parallel
runs do not collide. Bounded: `up` (including building the base image on a fresh
machine) within UP_TIMEOUT, each later step within its own deadline. Container
states and logs are printed when anything here fails.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "compose" / "local-stack.sh"
UP_TIMEOUT = 450  # a fresh machine: debootstrap base + stand-ins + api image, then healthy
IRIS_FEATURES = "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)"
IRIS_LABELS = {"setosa", "versicolor", "virginica"}

# Trains and saves a second iris model inside the api container (its /tmp is a tmpfs):
# the same steps a data scientist takes before `predictor publish`.
TRAIN_V2 = """
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
sio.dump(LogisticRegression(C=0.05, max_iter=500).fit(X, y), "/tmp/iris-v2.skops")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    env: dict[str, str]
    http_port: int
    prometheus_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def script(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def compose(self, *args: str, timeout: float = 120) -> str:
        """Runs a compose command; its output, or a failure that shows it."""
        proc = self.script("compose", *args, timeout=timeout)
        assert proc.returncode == 0, (
            f"compose {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
        return proc.stdout

    def logs(self) -> str:
        try:
            proc = self.script("logs", timeout=60)
            return proc.stdout + proc.stderr
        except subprocess.TimeoutExpired:
            return "(compose logs timed out)"

    def query(self, promql: str) -> list[dict]:
        r = requests.get(f"{self.prometheus}/api/v1/query", params={"query": promql}, timeout=5)
        r.raise_for_status()
        return r.json()["data"]["result"]


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    for tool in ("podman", "runc", "debootstrap"):
        assert shutil.which(tool), f"{tool} missing: install deps/apt-deploy.txt"
    # A short path: the podman socket lives here (unix socket paths max out at 108 bytes).
    stack_dir = tempfile.mkdtemp(prefix="predictor-stack-", dir="/tmp")
    st = Stack(
        env={
            **os.environ,
            "COMPOSE_PROJECT_NAME": f"predictor-test-{os.getpid()}",
            "PREDICTOR_HTTP_PORT": str(_free_port()),
            "PROMETHEUS_PORT": str(_free_port()),
            "PREDICTOR_STACK_DIR": stack_dir,
            "PYTHON": sys.executable,
            "STACK_UP_TIMEOUT": str(UP_TIMEOUT - 30),
        },
        http_port=0,
        prometheus_port=0,
    )
    st.http_port = int(st.env["PREDICTOR_HTTP_PORT"])
    st.prometheus_port = int(st.env["PROMETHEUS_PORT"])
    failed_before = request.session.testsfailed
    up_ok = False
    try:
        try:
            proc = st.script("up", timeout=UP_TIMEOUT)
            up_ok = proc.returncode == 0
            detail = f"exit {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
        except subprocess.TimeoutExpired as exc:
            detail = f"timed out after {UP_TIMEOUT}s\n{exc.stdout!r:.6000}\n{exc.stderr!r:.6000}"
        if not up_ok:
            pytest.fail(f"compose/local-stack.sh up failed: {detail}\n{st.logs()}")
        yield st
    finally:
        if up_ok and request.session.testsfailed > failed_before:
            print(f"--- compose stack after a failure ---\n{st.logs()}")
        down = st.script("down", timeout=240)
        shutil.rmtree(stack_dir, ignore_errors=True)
        assert down.returncode == 0, f"down failed:\n{down.stdout}\n{down.stderr}"


def _predict(base: str, row: list[float], session: requests.Session | None = None):
    return (session or requests).post(f"{base}/predict", json={"input": row}, timeout=10)


def _fresh_row() -> list[float]:
    # Never seen before in this run: the first answer cannot come from the cache.
    return [round(random.uniform(4.3, 7.9), 6), 3.0, round(random.uniform(1.0, 6.9), 6), 1.2]


def test_prediction_through_nginx(stack: Stack) -> None:
    r = _predict(stack.url, [5.1, 3.5, 1.4, 0.2])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "iris"
    assert body["version"] == "1"
    assert body["prediction"] == ["setosa"]
    assert r.headers["X-Request-ID"]
    # nginx keeps /metrics off the published port.
    assert requests.get(f"{stack.url}/metrics", timeout=5).status_code == 404


def test_repeat_is_a_cache_hit_from_redis(stack: Stack) -> None:
    row = _fresh_row()
    first, second = _predict(stack.url, row), _predict(stack.url, row)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["X-Cache"] == "miss"
    assert second.headers["X-Cache"] == "hit"
    assert second.json()["prediction"] == first.json()["prediction"]
    keys = stack.compose("exec", "-T", "redis", "redis-cli", "dbsize").strip()
    assert int(keys) >= 1, "the api caches in Redis (PREDICTOR_REDIS_URL), so Redis holds keys"


def test_api_scales_and_nginx_spreads_over_replicas(stack: Stack) -> None:
    proc = stack.script("up", "--scale", "api=2", "--no-recreate", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = stack.compose("ps", "--format", "json", "api").splitlines()
    ps = [json.loads(line) for line in lines if line.strip()]
    assert len(ps) == 2 and all(c["State"] == "running" for c in ps), ps
    # nginx resolves `api` when it (re)loads its config: pick up the new replica.
    stack.compose("exec", "-T", "nginx", "nginx", "-s", "reload")
    time.sleep(1)
    statuses = [_predict(stack.url, _fresh_row()).status_code for _ in range(40)]
    assert set(statuses) == {200}, statuses
    upstreams = set()
    for line in stack.compose("logs", "--no-log-prefix", "--since", "30s", "nginx").splitlines():
        if line.startswith("{"):
            upstreams.add(json.loads(line).get("upstream_addr"))
    upstreams.discard("-")
    assert len(upstreams) >= 2, f"nginx sent traffic to {upstreams} only"


def test_promotion_switches_version_with_no_failed_request(stack: Stack) -> None:
    stack.compose("exec", "-T", "api", "python3", "-c", TRAIN_V2, timeout=120)
    out = stack.compose(
        "exec", "-T", "api", "predictor", "publish", "/tmp/iris-v2.skops",
        "--name", "iris", "--version", "2", "--features", IRIS_FEATURES,
        "--labels", ",".join(sorted(IRIS_LABELS)),
    )  # fmt: skip
    assert "published iris version 2" in out

    results: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def load() -> None:
        # ~50 requests/s: well under nginx's per-address rate limit.
        pool = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
        with requests.Session() as s:
            i = 0
            while not stop.is_set():
                try:
                    r = _predict(stack.url, pool[i % 3], s)
                    results.append((r.status_code, r.headers.get("X-Model-Version")))
                except requests.RequestException as exc:
                    results.append((0, repr(exc)))
                i += 1
                time.sleep(0.02)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        time.sleep(2)
        out = stack.compose("exec", "-T", "api", "predictor", "promote", "iris", "2")
        assert "current version is now 2" in out
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tail = results[-30:]
            if len(tail) == 30 and all(v == "2" for _, v in tail):
                break
            time.sleep(0.2)
    finally:
        stop.set()
        worker.join(timeout=15)

    failed = [r for r in results if r[0] != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:10]}"
    versions = [v for _, v in results]
    assert versions[0] == "1", "load started on version 1"
    assert versions[-30:] == ["2"] * 30, f"not every replica serves version 2: {versions[-30:]}"
    listing = json.loads(stack.compose("exec", "-T", "api", "predictor", "models", "--json"))
    assert {(m["version"], m["current"]) for m in listing if m["name"] == "iris"} == {
        ("1", False),
        ("2", True),
    }


def test_prometheus_scrapes_every_replica_and_counts_requests(stack: Stack) -> None:
    # DNS service discovery refreshes every 15 s; scrapes every 15 s.
    deadline = time.monotonic() + 60
    targets: list[dict] = []
    while time.monotonic() < deadline:
        r = requests.get(f"{stack.prometheus}/api/v1/targets", timeout=5)
        targets = [t for t in r.json()["data"]["activeTargets"] if t["labels"]["job"] == "api"]
        if len(targets) == 2 and all(t["health"] == "up" for t in targets):
            break
        time.sleep(1)
    assert len(targets) == 2, f"api targets: {targets}"
    assert all(t["health"] == "up" for t in targets), targets

    promql = 'sum(predictor_http_requests_total{job="api",route="/predict"})'
    deadline = time.monotonic() + 30
    while not (before := stack.query(promql)) and time.monotonic() < deadline:
        time.sleep(1)
    assert before, f"no samples for {promql}"
    start = float(before[0]["value"][1])
    for _ in range(20):
        assert _predict(stack.url, [5.1, 3.5, 1.4, 0.2]).status_code == 200
    deadline = time.monotonic() + 40
    now = start
    while time.monotonic() < deadline:
        now = float(stack.query(promql)[0]["value"][1])
        if now >= start + 20:
            break
        time.sleep(1)
    assert now >= start + 20, f"{promql}: {start} -> {now} after 20 more requests"
