"""The servers the benchmark compares, each started and stopped by PID through
tools/stack.py's supervisor (its Gunicorn/Nginx/RedisServer, and Command for the rest).

- ``OurStack``: redis-server, our gunicorn (``service.gunicorn_conf``) and nginx
  from the repo's own template, all on free loopback ports under one run
  directory. Cases (a) and (b) go through nginx, (c) straight to gunicorn.
- ``SeedApp``: ``loadtests/seed_app.py`` under gunicorn, 2 sync workers.
- ``FloorApp``: ``loadtests/floor_app.py`` (raw WSGI, constant JSON) under gunicorn,
  2 sync workers: the HTTP floor.
- ``MLServer``: MLServer 1.7.1 with ``mlserver_sklearn.SKLearnModel`` at its
  default settings (only the ports are chosen), from ``.bench/mlserver-venv``.

Each server is ready only when a real prediction answers (MLServer's
``/v2/health/ready`` says 200 even when its inference worker died).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from tools.stack import REPO as ROOT
from tools.stack import VENV_BIN, Command, free_port

MLSERVER_BIN = ROOT / ".bench" / "mlserver-venv" / "bin"

READY_ROW = [5.1, 3.5, 1.4, 0.2]


def post_json(url: str, body: dict, timeout: float = 5.0) -> tuple[int, dict | None]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def request_body(protocol: str, rows: list[list[float]]) -> dict:
    """The JSON body of one request in a protocol (same shapes as wrk_rows.lua)."""
    if protocol == "seed":
        return {"input": rows[0] if len(rows) == 1 else rows}
    if protocol == "v1":
        return {"instances": rows}
    return {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP64",
                "data": [v for r in rows for v in r],
            }
        ]
    }


def answer_ok(protocol: str, answer: dict | None, n: int) -> bool:
    """A real prediction of n rows came back."""
    if not answer:
        return False
    if protocol == "seed":
        return len(answer.get("prediction", [])) == n
    if protocol == "v1":
        return len(answer.get("predictions", [])) == n
    outputs = answer.get("outputs") or [{}]
    return (outputs[0].get("shape") or [None])[0] == n


def _argv(process) -> str:  # noqa: ANN001 - a tools.stack.ManagedProcess
    args = process.proc.args if process.proc is not None else []
    return " ".join(str(a).replace(str(ROOT) + "/", "") for a in args)


class Server:
    """Base: start, wait for a real prediction, expose URLs and PIDs, stop."""

    name = "server"
    protocol = "seed"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Command] = []

    def start(self) -> None:
        raise NotImplementedError

    def url(self, model: str, direct: bool = False, rows: int = 1, protocol: str = "") -> str:
        """Where a case posts ``rows``-row bodies (in ``protocol``, default the server's)."""
        raise NotImplementedError

    def root_pids(self, direct: bool = False) -> list[int]:
        """Processes whose CPU and memory a case counts (descendants included)."""
        return [p.pid for p in self.procs]

    def wait_ready(self, model: str, timeout: float = 90.0, direct: bool = False) -> None:
        deadline = time.monotonic() + timeout
        body = request_body(self.protocol, [READY_ROW])
        status, answer = 0, None
        while time.monotonic() < deadline:
            self.check_alive()
            status, answer = post_json(self.url(model, direct), body)
            if status == 200 and answer_ok(self.protocol, answer, 1):
                return
            time.sleep(0.25)
        logs = self.logs()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s (last {status})\n{logs}")

    def logs(self) -> str:
        return "\n".join(p.log_tail(20) for p in self.procs)

    def command(self) -> str:
        """The command lines this server runs (for the report), paths relative to the repo."""
        return " ; ".join(_argv(p) for p in self.procs)

    def check_alive(self) -> None:
        for p in self.procs:
            if not p.alive():
                raise RuntimeError(f"{self.name}: {p.argv[0]} exited\n{p.log_tail(20)}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()


class SeedApp(Server):
    """(d) The seed article's Flask app under gunicorn, 2 sync workers."""

    name = "seed app"
    protocol = "seed"

    def __init__(self, workdir: Path, model_file: Path) -> None:
        super().__init__(workdir)
        self.model_file = model_file
        self.port = 0

    app, log_name = "loadtests.seed_app:app", "seed-app"

    def start(self) -> None:
        self.port = free_port()
        argv = [
            str(VENV_BIN / "gunicorn"),
            "-w", "2", "-k", "sync",
            "-b", f"127.0.0.1:{self.port}",
            "--no-control-socket",
            self.app,
        ]  # fmt: skip
        env = {"SEED_MODEL_PATH": str(self.model_file), "PYTHONPATH": str(ROOT)}
        self.procs.append(Command(self.workdir, self.log_name, argv, env).start())

    def url(self, model: str, direct: bool = False, rows: int = 1, protocol: str = "") -> str:
        # Batches go to the batch route this copy adds (same body as /predict).
        path = "/predict/batch" if rows > 1 else "/predict"
        return f"http://127.0.0.1:{self.port}{path}"


class FloorApp(SeedApp):
    """(f) A raw WSGI app answering constant JSON under gunicorn, 2 sync workers."""

    name = "floor"

    app, log_name = "loadtests.floor_app:app", "floor"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, Path("/dev/null"))  # the floor reads no model

    def url(self, model: str, direct: bool = False, rows: int = 1, protocol: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/predict"

    def wait_ready(self, model: str, timeout: float = 90.0, direct: bool = False) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            status, answer = post_json(self.url(model), {"input": READY_ROW})
            if status == 200 and answer:
                return
            time.sleep(0.1)
        raise RuntimeError(f"floor app not ready after {timeout:.0f} s\n{self.logs()}")


class MLServer(Server):
    """(e) MLServer 1.7.1 + mlserver-sklearn, default settings, one model."""

    name = "MLServer"
    protocol = "v2"

    def __init__(self, workdir: Path, model_name: str, model_file: Path) -> None:
        super().__init__(workdir)
        self.model_name = model_name
        self.model_file = model_file
        self.port = 0

    def start(self) -> None:
        if not (MLSERVER_BIN / "mlserver").exists():
            raise RuntimeError("no .bench/mlserver-venv: run `make mlserver-venv` first")
        self.port = free_port()
        repo = self.workdir / "mlserver"
        shutil.rmtree(repo, ignore_errors=True)
        model_dir = repo / self.model_name
        model_dir.mkdir(parents=True)
        shutil.copy(self.model_file, model_dir / "model.joblib")
        # Only the ports differ from MLServer's defaults (8080-8082 may be taken here).
        settings = {
            "http_port": self.port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
        }
        (repo / "settings.json").write_text(json.dumps(settings))
        model_settings = {
            "name": self.model_name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib"},
        }
        (model_dir / "model-settings.json").write_text(json.dumps(model_settings))
        argv = [str(MLSERVER_BIN / "mlserver"), "start", str(repo)]
        env = {"PATH": f"{MLSERVER_BIN}:{os.environ.get('PATH', '')}"}
        self.procs.append(Command(self.workdir, "mlserver", argv, env, cwd=repo).start())

    def url(self, model: str, direct: bool = False, rows: int = 1, protocol: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/v2/models/{model}/infer"


class OurStack(Server):
    """(a)(b)(c) redis-server + our gunicorn + nginx, started by tools/stack.py's classes.

    The same classes ``make stack`` and the integration tests use, so the
    benchmark measures the configs the repo ships. One override: nginx's
    per-client rate limit (200 r/s), which would turn a capacity test into a
    429 test, is lifted for the benchmark's single client.
    """

    name = "our stack"

    def __init__(
        self,
        workdir: Path,
        model: str,
        store: Path,
        runtime: str,
        protocol: str = "seed",
        extra_env: dict[str, str] | None = None,
        cache: str = "redis",
    ) -> None:
        super().__init__(workdir)
        self.cache = cache  # redis | local (in-process LRU) | off
        self.model = model
        self.store = store
        self.runtime = runtime
        self.protocol = protocol
        self.extra_env = extra_env or {}
        self.redis = self.gunicorn = self.nginx = None

    def start(self) -> None:
        from tools.stack import Gunicorn, Nginx, RedisServer

        run = self.workdir / "stack"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        if self.cache == "redis":
            self.redis = RedisServer(run).start()
        env = {
            "PREDICTOR_RUNTIME": self.runtime,
            # The seed route answers from the default model: make it the benchmarked one.
            "PREDICTOR_DEFAULT_MODEL": self.model,
            **self.extra_env,
        }
        if self.cache == "off":
            env["PREDICTOR_CACHE_ENABLED"] = "false"
        try:
            # workers=None: the service's own default (one per CPU).
            self.gunicorn = Gunicorn(
                run,
                self.store,
                redis_url=self.redis.url if self.redis else None,
                workers=None,
                env=env,
            ).start(timeout=120)
            self.nginx = Nginx(
                run,
                [self.gunicorn.address],
                values={"NGINX_RATE_LIMIT": "1000000r/s", "NGINX_RATE_BURST": "1000000"},
            ).start()
        except BaseException:
            self.stop()
            raise

    def url(self, model: str, direct: bool = False, rows: int = 1, protocol: str = "") -> str:
        base = self.gunicorn.url if direct else self.nginx.url
        protocol = protocol or self.protocol
        if protocol == "seed":
            return f"{base}/predict"
        if protocol == "v1":
            return f"{base}/v1/models/{model}:predict"
        return f"{base}/v2/models/{model}/infer"

    def root_pids(self, direct: bool = False) -> list[int]:
        procs = [self.redis, self.gunicorn] + ([] if direct else [self.nginx])
        return [p.pid for p in procs if p is not None and p.pid]

    def logs(self) -> str:
        return "\n".join(p.log_tail() for p in (self.redis, self.gunicorn, self.nginx) if p)

    def command(self) -> str:
        settings = " ".join(
            f"{k}={v}" for k, v in sorted(self.gunicorn.extra_env.items()) if k != "PATH"
        )
        parts = [_argv(p) for p in (self.redis, self.nginx) if p is not None]
        return " ; ".join([f"{settings} {_argv(self.gunicorn)}", *parts])

    def check_alive(self) -> None:
        for p in (self.redis, self.gunicorn, self.nginx):
            if p is not None and not p.alive():
                raise RuntimeError(f"{p.name} exited\n{p.log_tail()}")

    def stop(self) -> None:
        for p in (self.nginx, self.gunicorn, self.redis):
            if p is not None:
                p.stop()
        self.redis = self.gunicorn = self.nginx = None
