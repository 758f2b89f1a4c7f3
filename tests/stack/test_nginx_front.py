"""The nginx front, for real: redis-server, gunicorn (2 workers) and nginx on free ports.

Everything is started by tools/stack.py from the repo's own configs and stopped by
PID. Covers request ids, the JSON access log, the body limit, rate limiting, the
routes kept off the public listener, retries on a dead upstream, reloads, the
renderer and its agreement with envsubst, and the `up`/`down` CLI.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from service.settings import Settings
from tests import helpers
from tests.helpers import IRIS_ROW, log_entry
from tools import stack
from tools.stack import (
    NGINX_DEFAULTS,
    NGINX_TEMPLATE,
    Gunicorn,
    Nginx,
    Prometheus,
    RedisServer,
    TemplateError,
    free_port,
    read_env_file,
    render_nginx_config,
)

HEX32 = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Front:
    run_dir: Path
    store: Path
    redis: RedisServer
    api: Gunicorn
    nginx: Nginx


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, demo_store_template: Path) -> Iterator[Front]:
    run_dir = tmp_path_factory.mktemp("nginx-front")
    store = run_dir / "models"
    shutil.copytree(demo_store_template, store)
    with contextlib.ExitStack() as cleanup, pytest.MonkeyPatch.context() as env:
        for key in [k for k in os.environ if k.startswith("PREDICTOR_")]:
            env.delenv(key)  # app and nginx both get the defaults, whatever the shell says
        redis = RedisServer(run_dir).start()
        cleanup.callback(redis.stop)
        api = Gunicorn(run_dir, store, redis_url=redis.url, workers=2, inherit_settings=False)
        api.start()
        cleanup.callback(api.stop)
        nginx = Nginx(run_dir, [api.address]).start()
        cleanup.callback(nginx.stop)
        yield Front(run_dir, store, redis, api, nginx)


@pytest.fixture
def extra_nginx(front: Front) -> Iterator[list[Nginx]]:
    """Further nginx instances a test starts; each stopped by PID afterwards."""
    started: list[Nginx] = []
    yield started
    for instance in started:
        instance.stop()
    assert not any(instance.alive() for instance in started)


def predict(
    base: str, headers: dict[str, str] | None = None, session: requests.Session | None = None
) -> requests.Response:
    return (session or requests).post(
        f"{base}/predict", json={"input": IRIS_ROW}, headers=headers or {}, timeout=10
    )


def assert_json_error(response: requests.Response, status: int, code: str) -> dict:
    """The shared check, plus: every answer through the front carries its request id."""
    body = helpers.assert_json_error(response, status, code)
    assert response.headers["X-Request-ID"]
    return body


# --- configuration ------------------------------------------------------------------


def test_rendered_config_passes_nginx_t(front: Front) -> None:
    assert "test is successful" in front.nginx.check_config()
    assert not re.search(r"\$\{", front.nginx.site_conf.read_text())


def test_template_under_envsubst_equals_renderer_and_passes_nginx_t(tmp_path: Path) -> None:
    """The official image's entrypoint runs envsubst on it: same text, valid config."""
    values = read_env_file(NGINX_DEFAULTS)
    values["NGINX_ACCESS_LOG"] = str(tmp_path / "access.log")
    template = NGINX_TEMPLATE.read_text()
    # What 20-envsubst-on-templates.sh does: substitute every defined variable by name.
    env = {"PATH": os.environ["PATH"], **values}
    shell_format = " ".join(f"${{{name}}}" for name in env)
    out = subprocess.run(
        ["envsubst", shell_format], input=template, env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert out.stdout == render_nginx_config(template, values)

    site = tmp_path / "predictor.conf"
    site.write_text(out.stdout)
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ client_body_temp_path {tmp_path}/body; "
        f"proxy_temp_path {tmp_path}/proxy; include {site}; }}\n"
    )
    check = subprocess.run(
        [stack.require_binary("nginx"), "-t", "-c", str(main), "-p", f"{tmp_path}/",
         "-e", f"{tmp_path}/error.log"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_defaults_cover_every_placeholder() -> None:
    names = stack.template_placeholders(NGINX_TEMPLATE.read_text())
    assert names == set(read_env_file(NGINX_DEFAULTS))


@pytest.mark.parametrize(
    ("template", "values", "message"),
    [
        ("listen ${A};", {}, "no value for A"),
        ("listen ${A};", {"A": "1", "B": "2"}, "no placeholder for B"),
        ("listen ${A} ${B};", {"A": "1"}, "no value for B"),
        ("listen ${A};", {"A": " "}, "empty value for A"),
        ("listen ${A-1};", {}, "malformed placeholder"),
        ("listen ${A", {}, "malformed placeholder"),
    ],
)
def test_renderer_refuses_mismatch(template: str, values: dict, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        render_nginx_config(template, values)


def test_renderer_leaves_nginx_variables_alone() -> None:
    text = "set $x $request_id; listen ${PORT};"
    assert render_nginx_config(text, {"PORT": 9}) == "set $x $request_id; listen 9;"


def test_body_limit_equals_app_setting(front: Front, monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = front.nginx.site_conf.read_text()
    limits = set(re.findall(r"client_max_body_size (\d+);", rendered))
    assert limits == {str(Settings().MAX_BODY_BYTES)}
    # The defaults file (compose, Kubernetes) says the same as the app's default.
    default = Settings.model_fields["MAX_BODY_BYTES"].default
    assert read_env_file(NGINX_DEFAULTS)["PREDICTOR_MAX_BODY_BYTES"] == str(default)
    # And a deployment that changes the app's limit changes nginx's with it.
    monkeypatch.setenv("PREDICTOR_MAX_BODY_BYTES", "4096")
    assert stack.nginx_values()["PREDICTOR_MAX_BODY_BYTES"] == "4096"


# --- requests through nginx -----------------------------------------------------------


def test_prediction_and_client_request_id_round_trip(front: Front) -> None:
    response = predict(front.nginx.url, {"X-Request-ID": "client-id-0001"})
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == ["setosa"]
    assert response.json()["model"] == "iris"
    assert response.headers["X-Request-ID"] == "client-id-0001"
    # Exactly one X-Request-ID header (nginx's), not nginx's plus the app's echo.
    assert response.raw.headers.getlist("X-Request-ID") == ["client-id-0001"]


def test_request_id_generated_when_absent_or_unusable(front: Front) -> None:
    plain = predict(front.nginx.url)
    assert plain.status_code == 200
    assert HEX32.match(plain.headers["X-Request-ID"])
    hostile = predict(front.nginx.url, {"X-Request-ID": 'x" y' + "z" * 200})
    assert hostile.status_code == 200
    assert HEX32.match(hostile.headers["X-Request-ID"])
    assert plain.headers["X-Request-ID"] != hostile.headers["X-Request-ID"]


def test_request_id_reaches_the_app(front: Front) -> None:
    """The app logs the id of a failed request: it must be the one nginx passed up."""
    generated = requests.post(f"{front.nginx.url}/predict", json={"input": [1.0, 2.0]}, timeout=10)
    assert generated.status_code == 400
    rid = generated.headers["X-Request-ID"]
    assert HEX32.match(rid)
    stack.wait_until(lambda: rid in front.api.log_file.read_text(), 5, "app logged the id")


def test_access_log_is_json_with_upstream_timing(front: Front) -> None:
    rid = "log-check-0001"
    assert predict(front.nginx.url, {"X-Request-ID": rid}).status_code == 200
    entry = log_entry(front.nginx, rid)
    for line in front.nginx.access_log.read_text().splitlines():
        json.loads(line)  # every line, not only ours, is one JSON object
    assert entry["status"] == 200
    assert entry["method"] == "POST" and entry["uri"] == "/predict"
    assert entry["upstream_addr"] == front.api.address
    assert entry["upstream_status"] == "200"
    assert 0 <= float(entry["upstream_response_time"]) <= float(entry["request_time"]) + 0.001
    assert isinstance(entry["request_time"], float | int)
    assert entry["body_bytes_sent"] > 0
    assert entry["cache"] in {"hit", "miss"}
    assert entry["model"] == "iris" and entry["model_version"] == "1"


def test_body_above_limit_is_json_413_and_never_reaches_the_app(front: Front) -> None:
    limit = Settings().MAX_BODY_BYTES
    rid = "too-large-0001"
    response = requests.post(
        f"{front.nginx.url}/predict",
        data=b"x" * (limit + 1),
        headers={"Content-Type": "application/json", "X-Request-ID": rid},
        timeout=10,
    )
    body = assert_json_error(response, 413, "payload_too_large")
    assert str(limit) in body["error"]["message"]
    assert response.headers["X-Request-ID"] == rid
    assert log_entry(front.nginx, rid)["upstream_addr"] == ""


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/metrics", 404),
        ("GET", "/metrics/", 404),
        ("GET", "//metrics", 404),
        ("GET", "/%6detrics", 404),
        ("GET", "/v2/repository/index", 403),
        ("POST", "/v2/repository/index", 403),
        ("POST", "/v2/repository/models/iris/load", 403),
        ("POST", "/v2/repository/models/iris/unload", 403),
        ("POST", "/v2/%72epository/index", 403),
    ],
)
def test_internal_routes_are_not_public(front: Front, method: str, path: str, status: int) -> None:
    response = requests.request(method, front.nginx.url + path, timeout=10)
    assert_json_error(response, status, "not_found" if status == 404 else "forbidden")


def test_metrics_served_on_internal_listener_only(front: Front) -> None:
    internal = requests.get(f"{front.nginx.internal_url}/metrics", timeout=10)
    assert internal.status_code == 200
    assert "predictor_http_requests_total" in internal.text
    status = requests.get(f"{front.nginx.internal_url}/nginx_status", timeout=10)
    assert status.status_code == 200 and "Active connections" in status.text
    assert requests.get(f"{front.nginx.url}/nginx_status", timeout=10).status_code != 200


# --- nginx instances of their own -------------------------------------------------


def test_rate_limit_answers_json_429(front: Front, extra_nginx: list[Nginx]) -> None:
    limited = Nginx(
        front.run_dir,
        [front.api.address],
        values={"NGINX_RATE_LIMIT": "2r/s", "NGINX_RATE_BURST": 3},
        name="nginx-ratelimit",
    )
    extra_nginx.append(limited.start())
    with requests.Session() as session:
        started = time.monotonic()
        responses = [session.get(f"{limited.url}/healthz", timeout=10) for _ in range(20)]
        elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    # The first request, the burst of 3, and 2 more per second the burst took.
    assert 4 <= statuses.count(200) <= 4 + math.ceil(elapsed * 2), (elapsed, statuses)
    assert statuses.count(429) >= 10, statuses
    assert statuses[:4] == [200] * 4
    for response in responses:
        if response.status_code == 429:
            assert_json_error(response, 429, "rate_limited")
            assert response.headers["Retry-After"] == "1"


def test_dead_upstream_every_request_still_succeeds(front: Front, extra_nginx: list[Nginx]) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    pair = Nginx(front.run_dir, [dead, front.api.address], name="nginx-deadpeer")
    extra_nginx.append(pair.start())
    with requests.Session() as session:
        statuses = [predict(pair.url, session=session).status_code for _ in range(20)]
    assert statuses == [200] * 20
    stack.wait_until(lambda: len(pair.access_log_entries()) >= 20, 5, "20 log lines")
    entries = pair.access_log_entries()
    # The POST that met the dead peer was sent again to the live one (one request, two tries).
    retried = [e for e in entries if dead in e["upstream_addr"]]
    assert retried, entries
    assert retried[0]["upstream_addr"] == f"{dead}, {front.api.address}"
    assert retried[0]["upstream_status"] == "502, 200"
    assert retried[0]["status"] == 200


def test_reload_switches_upstreams_and_502_is_json(front: Front, extra_nginx: list[Nginx]) -> None:
    dead = f"127.0.0.1:{free_port()}"
    switch = Nginx(front.run_dir, [dead], name="nginx-reload")
    extra_nginx.append(switch.start())
    assert_json_error(predict(switch.url), 502, "bad_gateway")
    master = switch.pid
    switch.reload([front.api.address])
    assert switch.pid == master  # same master, new workers
    assert predict(switch.url).status_code == 200


# --- the stack runner itself ------------------------------------------------------


def test_redis_server_pause_kill_restart(front: Front) -> None:
    redis = RedisServer(front.run_dir, name="redis-lifecycle").start()
    try:
        port = redis.port
        assert redis.command("SET", "k", "v") == b"+OK"
        redis.pause(0.3)
        redis.kill()
        assert not redis.ping()
        redis.restart()
        assert redis.port == port and redis.ping()
        assert redis.command("GET", "k") == b"$-1"  # nothing persisted
    finally:
        redis.stop()
    assert not redis.alive() and not redis.pid_file.exists()


def test_prometheus_runner_scrapes_the_api(front: Front, tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: predictor\n    static_configs: [{{targets: ['{front.api.address}']}}]\n"
    )
    prom = Prometheus(front.run_dir, config).start()
    try:

        def target_up() -> bool:
            data = requests.get(f"{prom.url}/api/v1/targets", timeout=5).json()
            return any(t["health"] == "up" for t in data["data"]["activeTargets"])

        stack.wait_until(target_up, 20, "prometheus scraped the api", prom.alive, interval=0.3)
    finally:
        prom.stop()
    assert not prom.alive()


def test_cli_up_status_down(front: Front, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    ports = [str(free_port()) for _ in range(4)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTOR_")}
    cli = [sys.executable, "-m", "tools.stack"]
    common = ["--run-dir", str(run_dir)]
    up = subprocess.run(
        [*cli, "up", *common, "--port", ports[0], "--internal-port", ports[1],
         "--api-port", ports[2], "--redis-port", ports[3], "--store", str(front.store),
         "--no-prometheus"],
        cwd=stack.REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        pids = {p.stem: int(p.read_text()) for p in run_dir.glob("*.pid")}
        assert set(pids) == {"redis", "gunicorn", "nginx"}
        response = predict(f"http://127.0.0.1:{ports[0]}")
        assert response.status_code == 200
        status = subprocess.run(
            [*cli, "status", *common], cwd=stack.REPO, capture_output=True, text=True
        )
        assert status.returncode == 0
        assert re.search(r"^nginx\s+running .* probe=200", status.stdout, re.M), status.stdout
        second = subprocess.run(
            [*cli, "up", *common], cwd=stack.REPO, env=env, capture_output=True, text=True
        )
        assert second.returncode == 1 and "already running" in second.stderr
    finally:
        down = subprocess.run(
            [*cli, "down", *common], cwd=stack.REPO, capture_output=True, text=True, timeout=60
        )
    assert down.returncode == 0, down.stderr
    assert not list(run_dir.glob("*.pid"))
    assert not any(stack.pid_alive(pid) for pid in pids.values())


def tcp_states(port: int) -> Counter:
    """States of the IPv4 sockets whose local port is ``port`` (from /proc/net/tcp)."""
    states: Counter = Counter()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            states[{"01": "established", "06": "time_wait", "0A": "listen"}.get(fields[3])] += 1
    return states


def test_upstream_keepalive_reuses_connections(front: Front) -> None:
    """With a worker class that keeps connections alive (gthread), nginx reuses them."""
    with contextlib.ExitStack() as cleanup:  # stops nginx first, then gunicorn
        api = Gunicorn(
            front.run_dir, front.store, workers=1, env={"PREDICTOR_THREADS": "2"},
            name="gunicorn-gthread", inherit_settings=False,
        ).start()  # fmt: skip
        cleanup.callback(api.stop)
        pooled = Nginx(
            front.run_dir, [api.address], values={"NGINX_UPSTREAM_KEEPALIVE_TIMEOUT": "4s"},
            name="nginx-keepalive",
        ).start()  # fmt: skip
        cleanup.callback(pooled.stop)
        before = tcp_states(api.port)
        with requests.Session() as session:
            statuses = [predict(pooled.url, session=session).status_code for _ in range(20)]
        after = tcp_states(api.port)
    assert statuses == [200] * 20
    # One connection carried all 20 requests and stays open, idle, in nginx's pool.
    assert after["established"] >= 1, after
    assert after["time_wait"] - before["time_wait"] <= 1, (before, after)
