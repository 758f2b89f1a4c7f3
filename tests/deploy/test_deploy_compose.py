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
import secrets
import shutil
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
import yaml

from tests.helpers import IRIS_FEATURES, REPO, free_port

SCRIPT = REPO / "compose" / "local-stack.sh"
UP_TIMEOUT = 1800  # a fresh machine: debootstrap base, stand-ins, the api image (pip install
# of every pin, the demo trained), then a first start that trains and signs the demo again;
# only stops a hang: a loaded 2-core machine took over 450 s for the api image alone
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
            "PREDICTOR_HTTP_PORT": str(free_port()),
            "PROMETHEUS_PORT": str(free_port()),
            "PREDICTOR_STACK_DIR": stack_dir,
            "PYTHON": sys.executable,
            "STACK_UP_TIMEOUT": str(UP_TIMEOUT - 30),
            "STACK_TICKER_MAX_SECONDS": str(UP_TIMEOUT + 1200),  # up, then the tests
            # The demo models are cheaper than a round trip: share them through Redis anyway,
            # so the test sees Redis serve the repeat.
            "PREDICTOR_CACHE_SHARED_MIN_US": "0",
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


def _iris_versions(stack: Stack) -> dict[str, bool]:
    """iris's versions in the store volume: version -> whether it is current."""
    listing = json.loads(stack.compose("exec", "-T", "api", "predictor", "models", "--json"))
    return {m["version"]: m["current"] for m in listing if m["name"] == "iris"}


def _iris_current(stack: Stack) -> str:
    (current,) = [v for v, is_current in _iris_versions(stack).items() if is_current]
    return current


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
    # The first start made the signing key and trained the demo again, signed with it
    # (docker-entrypoint.sh): a version after the image's own, and the current one.
    assert body["version"] == _iris_current(stack) != "1"
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
    auth = 'REDISCLI_AUTH="$(cat /run/secrets/redis/password)" redis-cli dbsize'
    keys = stack.compose("exec", "-T", "redis", "sh", "-c", auth).strip()
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
    before = _iris_current(stack)
    out = stack.compose(
        "exec", "-T", "api", "predictor", "publish", "/tmp/iris-v2.skops",
        "--name", "iris", "--features", ",".join(IRIS_FEATURES),
        "--labels", ",".join(sorted(IRIS_LABELS)),
    )  # fmt: skip
    new = str(int(before) + 1)  # the next integer: publish's default version
    assert f"published iris version {new}" in out

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
        out = stack.compose("exec", "-T", "api", "predictor", "promote", "iris", new)
        assert f"current version is now {new}" in out
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tail = results[-30:]
            if len(tail) == 30 and all(v == new for _, v in tail):
                break
            time.sleep(0.2)
    finally:
        stop.set()
        worker.join(timeout=15)

    failed = [r for r in results if r[0] != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:10]}"
    versions = [v for _, v in results]
    assert versions[0] == before, f"load started on version {before}"
    assert versions[-30:] == [new] * 30, f"not every replica serves {new}: {versions[-30:]}"
    versions_now = _iris_versions(stack)
    assert versions_now[new] is True and versions_now[before] is False, versions_now


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


# --- the Kubernetes pod, rehearsed with the image just built --------------------------


def _podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(REPO / "compose" / "containers.conf")}
    return subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _wait_status(url: str, status: int, deadline_s: float) -> int | None:
    deadline, last = time.monotonic() + deadline_s, None
    while time.monotonic() < deadline:
        try:
            last = requests.get(url, timeout=2).status_code
            if last == status:
                return last
        except requests.RequestException:
            pass
        time.sleep(0.3)
    return last


def test_k8s_dev_pod_runs_as_rendered(stack: Stack, tmp_path: Path) -> None:
    """The dev overlay's api pod run the way a kubelet would: the select-models init
    container, then the api, each with the rendered user, read-only root, dropped
    capabilities, volumes, env and probes; then SIGTERM drains before it exits."""
    from tests.deploy.test_deploy_k8s import api, container, container_env, kustomize

    image = yaml.safe_load((REPO / "compose" / "docker-compose.local.yml").read_text())
    image = image["services"]["api"]["image"]
    docs = kustomize(REPO / "k8s" / "overlays" / "dev")
    deployment = api(docs)
    pod = deployment["spec"]["template"]["spec"]
    sc = pod["securityContext"]
    served = {}

    volume_args: dict[str, tuple[str, ...]] = {}  # volume name -> how to mount it
    for v in pod["volumes"]:
        host = tmp_path / v["name"]
        host.mkdir()
        if "configMap" in v:
            (cm,) = [
                d
                for d in docs
                if d["kind"] == "ConfigMap" and d["metadata"]["name"] == v["configMap"]["name"]
            ]
            for key, value in cm["data"].items():
                (host / key).write_text(value)
            if v["name"] == "served-models":
                served = cm["data"]
        elif v.get("emptyDir", {}).get("medium") == "Memory":
            volume_args[v["name"]] = ("tmpfs",)
            continue
        elif "secret" in v:
            # Secrets made as docs/deploy.md says: a new signing key, a random password.
            secret = v["secret"]
            if secret["secretName"] == "predictor-signing-key":
                value = subprocess.run(
                    [str(REPO / ".venv" / "bin" / "predictor"), "signing-key", "new"],
                    capture_output=True, text=True, check=True, timeout=120,
                ).stdout.strip()  # fmt: skip
                files = ["signing.key"]
            else:
                value = secrets.token_hex(32)
                files = [item["path"] for item in secret.get("items", [])] or ["password"]
            for file in files:
                (host / file).write_text(value + "\n")
                os.chown(host / file, sc["runAsUser"], sc["fsGroup"])
                (host / file).chmod(secret.get("defaultMode", 0o644))
            os.chown(host, sc["runAsUser"], sc["fsGroup"])
            if secret["secretName"] == "predictor-signing-key":
                signing_key = host / "signing.key"
        else:
            assert "emptyDir" in v, f"dev uses no other volume kinds: {v}"
            os.chown(host, sc["runAsUser"], sc["fsGroup"])
            host.chmod(0o770)
        volume_args[v["name"]] = (str(host),)

    def run_args(c: dict) -> list[str]:
        csc = c["securityContext"]
        args = [
            "--user", f"{sc['runAsUser']}:{sc['runAsGroup']}",
            "--group-add", str(sc["fsGroup"]),
            "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges",
        ]  # fmt: skip
        assert csc["readOnlyRootFilesystem"] and not csc["allowPrivilegeEscalation"]
        args.append("--read-only")
        for m in c["volumeMounts"]:
            (source,) = volume_args[m["name"]]
            if source == "tmpfs":
                assert m["mountPath"] == "/dev/shm"
                args += ["--shm-size", "64m"]
            else:
                args += ["-v", f"{source}:{m['mountPath']}:{'ro' if m.get('readOnly') else 'rw'}"]
        for k, v in container_env(docs, c).items():
            args += ["-e", f"{k}={v}"]
        return args

    (init,) = pod["initContainers"]
    # The image's demo models were signed with a key thrown away at build time: train
    # them into the shared store with the Secret's key, as docs/deploy.md says.
    (store_mount,) = [m["name"] for m in init["volumeMounts"] if m["mountPath"] == "/store"]
    store_dir = Path(volume_args[store_mount][0])
    trained = subprocess.run(
        [str(REPO / ".venv" / "bin" / "predictor"), "train-demo", "--store", str(store_dir)],
        capture_output=True, text=True, timeout=600,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("PREDICTOR_")},
             "PREDICTOR_SIGNING_KEY_FILE": str(signing_key)},
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr
    subprocess.run(["chmod", "-R", "a+rX", str(store_dir)], check=True)
    proc = _podman("run", "--rm", *run_args(init), image, *init["command"], timeout=120)
    assert proc.returncode == 0, f"select-models failed:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.count("select-models:") == len(served)

    main = container(deployment, "api")
    (port,) = [p["containerPort"] for p in main["ports"] if p["name"] == "http"]  # also grpc
    host_port = free_port()
    name = f"predictor-k8s-rehearsal-{os.getpid()}"
    proc = _podman(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{host_port}:{port}",
        *run_args(main), image,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    base = f"http://127.0.0.1:{host_port}"
    try:
        startup = main["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        assert _wait_status(base + startup["httpGet"]["path"], 200, budget) == 200
        assert _wait_status(base + main["readinessProbe"]["httpGet"]["path"], 200, 30) == 200
        assert requests.get(base + main["livenessProbe"]["httpGet"]["path"], timeout=5).ok
        r = _predict(base, [5.1, 3.5, 1.4, 0.2])
        assert r.status_code == 200, r.text
        assert r.headers["X-Model-Version"] == served["iris"]
        # Redis (predictor-redis) does not exist here: the answer came from the model.

        # What the kubelet does after preStop: SIGTERM. Readiness fails at once, the
        # listener keeps serving for the drain time, then the process exits in time.
        env = container_env(docs, main)
        drain = float(env["PREDICTOR_DRAIN_SECONDS"])
        grace = pod["terminationGracePeriodSeconds"]
        started = time.monotonic()
        assert _podman("kill", "--signal", "TERM", name).returncode == 0
        assert _wait_status(base + "/readyz", 503, drain) == 503
        assert _predict(base, [6.7, 3.0, 5.2, 2.3]).status_code == 200, "still serving"
        while time.monotonic() - started < grace:
            state = _podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            if state in ("exited", "stopped"):
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        assert state in ("exited", "stopped"), f"still {state} after {elapsed:.0f}s"
        assert elapsed >= drain - 0.5, "the listener closed before the drain ended"
        code = _podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert code == "0", _podman("logs", name).stderr[-3000:]
    finally:
        logs = _podman("logs", name)
        print(f"--- rehearsal pod logs ---\n{logs.stdout[-4000:]}{logs.stderr[-4000:]}")
        _podman("rm", "-f", name)
