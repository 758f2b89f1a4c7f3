"""Access control and transport through the real nginx front (issue 8).

A gunicorn with API keys and an admin token (both read from mounted files) behind
nginx with TLS on a certificate this module makes with `openssl`. Covers: TLS 1.3 and
1.2 with forward-secret AEAD suites only, TLS 1.0/1.1 refused (a control server
proves the client could speak them), HSTS over TLS only, the web page's security
headers as nginx delivers them, prediction routes needing a key (401) and admin
routes their own token (401/403), per-key and per-address rate limits (JSON 429), the
key id in the access log but never the key, and no secret in any log.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from service.auth import hash_key
from tests.helpers import IRIS_ROW, assert_json_error, log_entry
from tools.stack import Gunicorn, Nginx, TlsFiles

# Made like `predictor api-key new` makes them; distinct enough to grep for.
KEYS = {"alice": secrets.token_urlsafe(32), "bob": secrets.token_urlsafe(32)}
ADMIN_TOKEN = secrets.token_urlsafe(32)
WRONG_KEY = secrets.token_urlsafe(32)
HSTS = "max-age=63072000"

PREDICTION_ROUTES = [
    ("/predict", {"input": IRIS_ROW}),
    ("/v1/models/iris:predict", {"instances": [IRIS_ROW]}),
    (
        "/v2/models/iris/infer",
        {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": IRIS_ROW}]},
    ),
]


@dataclass
class Secured:
    run_dir: Path
    cert: Path
    api: Gunicorn
    nginx: Nginx

    def https(self, path: str) -> str:
        return self.nginx.tls_url + path


def make_certificate(directory: Path) -> TlsFiles:
    """A self-signed P-256 certificate for 127.0.0.1/localhost, valid for a day."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl not found: apt-get install openssl (deps/apt-chaos.txt)"
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    key.chmod(0o600)
    return TlsFiles(cert, key)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, demo_store_template: Path) -> Iterator:
    run_dir = tmp_path_factory.mktemp("security-front")
    store = run_dir / "models"
    shutil.copytree(demo_store_template, store)
    # Secrets as mounted files: hashed keys (the config never holds a usable key) and the
    # admin token, each readable by the service's user only.
    secrets_dir = run_dir / "secrets"
    secrets_dir.mkdir(mode=0o700)
    keys_file = secrets_dir / "api-keys"
    keys_file.write_text("".join(f"{i}:{hash_key(k)}\n" for i, k in KEYS.items()))
    token_file = secrets_dir / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    tls = make_certificate(secrets_dir)
    with contextlib.ExitStack() as cleanup:
        api = Gunicorn(
            run_dir, store, workers=2, inherit_settings=False, name="gunicorn-keyed",
            env={
                "PREDICTOR_API_KEYS_FILE": str(keys_file),
                "PREDICTOR_ADMIN_TOKEN_FILE": str(token_file),
                # The most talkative level: still no secret may reach the log.
                "PREDICTOR_LOG_LEVEL": "debug",
            },
        ).start()  # fmt: skip
        cleanup.callback(api.stop)
        nginx = Nginx(run_dir, [api.address], tls=tls, name="nginx-tls").start()
        cleanup.callback(nginx.stop)
        yield Secured(run_dir, tls.certificate, api, nginx)


@pytest.fixture
def extra_nginx(secured: Secured) -> Iterator[list[Nginx]]:
    started: list[Nginx] = []
    yield started
    for instance in started:
        instance.stop()


def post(url: str, body: dict, verify: Path | bool = True, **headers: str) -> requests.Response:
    return requests.post(url, json=body, headers=headers, timeout=10, verify=verify)


# --- TLS ------------------------------------------------------------------------------


def handshake(port: int, cafile: Path, low: ssl.TLSVersion, high: ssl.TLSVersion, ciphers=None):
    """(protocol, cipher) of a TLS handshake with 127.0.0.1:port limited to low..high."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile)
    with warnings.catch_warnings():  # TLSVersion.TLSv1/TLSv1_1 are deprecated: that's the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version, ctx.maximum_version = low, high
    if ciphers:
        ctx.set_ciphers(ciphers)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version(), tls.cipher()[0]


def test_tls13_and_tls12_with_forward_secret_aead_only(secured: Secured) -> None:
    port, ca = secured.nginx.tls_port, secured.cert
    V = ssl.TLSVersion
    assert handshake(port, ca, V.TLSv1_3, V.TLSv1_3)[0] == "TLSv1.3"
    version, cipher = handshake(port, ca, V.TLSv1_2, V.TLSv1_2)
    assert version == "TLSv1.2" and cipher.startswith("ECDHE-") and "GCM" in cipher, cipher
    # A TLS 1.2 suite without AEAD (CBC + SHA-1) is refused at the handshake.
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        handshake(port, ca, V.TLSv1_2, V.TLSv1_2, "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0")


def test_tls10_and_tls11_are_refused_by_the_server(secured: Secured, tmp_path: Path) -> None:
    V = ssl.TLSVersion
    old = "ALL:@SECLEVEL=0"  # what a TLS 1.0 client needs (SHA-1 signatures)
    # Control: this client does speak TLS 1.0/1.1 to a server that allows them ...
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_ctx.minimum_version, server_ctx.maximum_version = V.TLSv1, V.TLSv1_1
    server_ctx.set_ciphers(old)
    key = secured.cert.with_name("tls.key")
    server_ctx.load_cert_chain(secured.cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve(times: int) -> None:
        for _ in range(times):
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), server_ctx.wrap_socket(conn, server_side=True):
                pass

    thread = threading.Thread(target=serve, args=(2,), daemon=True)
    thread.start()
    control_port = listener.getsockname()[1]
    try:
        assert handshake(control_port, secured.cert, V.TLSv1, V.TLSv1, old)[0] == "TLSv1"
        assert handshake(control_port, secured.cert, V.TLSv1_1, V.TLSv1_1, old)[0] == "TLSv1.1"
    finally:
        thread.join(10)
        listener.close()
    # ... and nginx answers both with a protocol_version alert.
    for version in (V.TLSv1, V.TLSv1_1):
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
            handshake(secured.nginx.tls_port, secured.cert, version, version, old)


def test_hsts_over_tls_only_and_on_nginx_own_errors(secured: Secured) -> None:
    ok = post(secured.https("/predict"), {"input": IRIS_ROW}, secured.cert, **{
        "X-API-Key": KEYS["alice"]})  # fmt: skip
    assert ok.status_code == 200 and ok.json()["prediction"] == ["setosa"]
    assert ok.headers["Strict-Transport-Security"] == HSTS
    # nginx's own JSON errors (named locations) carry it too.
    too_large = requests.post(
        secured.https("/predict"), data=b"x" * (2 << 20), verify=secured.cert, timeout=10,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert_json_error(too_large, 413, "payload_too_large")
    assert too_large.headers["Strict-Transport-Security"] == HSTS
    assert_json_error(requests.get(secured.https("/metrics"), verify=secured.cert), 404)
    # Plain HTTP: no HSTS (browsers ignore it there; the listener serves in-cluster probes).
    plain = post(secured.nginx.url + "/predict", {"input": IRIS_ROW}, **{
        "X-API-Key": KEYS["alice"]})  # fmt: skip
    assert plain.status_code == 200
    assert "Strict-Transport-Security" not in plain.headers


def test_web_page_security_headers_through_nginx(secured: Secured) -> None:
    page = requests.get(secured.https("/"), verify=secured.cert, timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Strict-Transport-Security"] == HSTS
    assert "Server" not in page.headers or "/" not in page.headers["Server"]  # no version


def test_without_tls_the_config_has_no_tls_directive(secured: Secured) -> None:
    plain = Nginx(secured.run_dir, [secured.api.address], name="nginx-plain-check")
    plain.write_config()
    plain.check_config()
    dumped = subprocess.run(plain._cli("-T"), capture_output=True, text=True, timeout=30)
    assert dumped.returncode == 0, dumped.stderr
    assert "ssl_certificate" not in dumped.stdout and " ssl;" not in dumped.stdout
    # The TLS instance's effective config does include the snippet.
    tls = subprocess.run(secured.nginx._cli("-T"), capture_output=True, text=True, timeout=30)
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in tls.stdout


# --- API keys and the admin token through nginx ---------------------------------------


@pytest.mark.parametrize(("path", "body"), PREDICTION_ROUTES)
def test_prediction_routes_need_a_key(secured: Secured, path: str, body: dict) -> None:
    url = secured.https(path)
    missing = post(url, body, secured.cert)
    assert_json_error(missing, 401)
    wrong = post(url, body, secured.cert, **{"X-API-Key": WRONG_KEY})
    assert_json_error(wrong, 401)
    # An admin token is not a prediction key.
    admin = post(url, body, secured.cert, Authorization=f"Bearer {ADMIN_TOKEN}")
    assert_json_error(admin, 401)
    for key_id, headers in [
        ("alice", {"Authorization": f"Bearer {KEYS['alice']}"}),
        ("bob", {"X-API-Key": KEYS["bob"]}),
    ]:
        rid = f"key-{key_id}-{secrets.token_hex(4)}"
        ok = post(url, body, secured.cert, **headers, **{"X-Request-ID": rid})
        assert ok.status_code == 200, ok.text
        # The id is for the operator's log, not echoed to the client.
        assert "X-API-Key-Id" not in ok.headers
        entry = log_entry(secured.nginx, rid)
        assert entry["api_key_id"] == key_id and entry["status"] == 200
    assert log_entry(secured.nginx, missing.headers["X-Request-ID"])["api_key_id"] == ""


def test_health_and_metadata_stay_open(secured: Secured) -> None:
    for path in ("/healthz", "/readyz", "/v1/models/iris", "/v2/health/ready", "/openapi.json"):
        response = requests.get(secured.https(path), verify=secured.cert, timeout=10)
        assert response.status_code == 200, (path, response.text)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_admin_routes(secured: Secured, method: str) -> None:
    path = "/v2/repository/index"
    public = secured.https(path)
    # Never served on the public listener, whatever the credentials.
    for headers in ({}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}):
        response = requests.request(method, public, headers=headers, verify=secured.cert)
        assert_json_error(response, 403, "forbidden")
    if method == "GET":
        return  # the repository index is POST only
    internal = secured.nginx.internal_url + path
    assert_json_error(requests.post(internal, timeout=10), 401)
    for wrong in (WRONG_KEY, KEYS["alice"]):  # a prediction key is not the admin token
        response = requests.post(internal, headers={"Authorization": f"Bearer {wrong}"})
        assert_json_error(response, 403)
    ok = requests.post(internal, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    assert ok.status_code == 200 and {m["name"] for m in ok.json()} >= {"iris", "diabetes"}


# --- rate limits --------------------------------------------------------------------


def burst(url: str, count: int, headers: dict[str, str] | None = None, each=None) -> list:
    with requests.Session() as session:
        out = []
        for i in range(count):
            h = dict(headers or {}) | (each(i) if each else {})
            out.append(session.post(url, json={"input": IRIS_ROW}, headers=h, timeout=10))
        return out


def test_per_key_rate_limit(secured: Secured, extra_nginx: list[Nginx]) -> None:
    limited = Nginx(
        secured.run_dir, [secured.api.address], name="nginx-keylimit",
        values={"NGINX_KEY_RATE_LIMIT": "2r/s", "NGINX_KEY_RATE_BURST": 3},
    )  # fmt: skip
    extra_nginx.append(limited.start())
    url = limited.url + "/predict"
    started = time.monotonic()
    alice = burst(url, 20, {"X-API-Key": KEYS["alice"]})
    statuses = [r.status_code for r in alice]
    assert statuses[:4] == [200] * 4, statuses  # the first one and the burst of 3
    assert statuses.count(429) >= 10, statuses
    assert statuses.count(200) <= 4 + int((time.monotonic() - started) * 2) + 1, statuses
    for response in alice:
        if response.status_code == 429:
            assert_json_error(response, 429, "rate_limited")
            assert response.headers["Retry-After"] == "1"
    # Another key has its own budget, also as a bearer token ...
    bob = burst(url, 4, {"Authorization": f"Bearer {KEYS['bob']}"})
    assert [r.status_code for r in bob] == [200] * 4
    # ... and a request without a key is not counted against any key.
    assert all(r.status_code == 401 for r in burst(url, 6))
    # The limit's zone is keyed by the key, but the log shows only its id.
    assert KEYS["alice"] not in limited.access_log.read_text()
    assert "limiting requests" in limited.error_log.read_text()


def test_made_up_keys_still_meet_the_per_address_limit(
    secured: Secured, extra_nginx: list[Nginx]
) -> None:
    limited = Nginx(
        secured.run_dir, [secured.api.address], name="nginx-iplimit",
        values={"NGINX_RATE_LIMIT": "2r/s", "NGINX_RATE_BURST": 3},
    )  # fmt: skip
    extra_nginx.append(limited.start())
    # A fresh key on every request gets a fresh per-key budget, not a fresh address.
    responses = burst(limited.url + "/predict", 20, each=lambda i: {"X-API-Key": f"guess-{i}"})
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {401, 429} and statuses.count(429) >= 10, statuses
    assert_json_error(next(r for r in responses if r.status_code == 429), 429, "rate_limited")


# --- secrets never logged -----------------------------------------------------------


def test_no_key_or_token_in_any_log(secured: Secured, extra_nginx: list[Nginx]) -> None:
    """Every way a secret is sent, then every log of the module's servers is searched."""
    limited = Nginx(
        secured.run_dir, [secured.api.address], name="nginx-secretlog",
        values={"NGINX_KEY_RATE_LIMIT": "1r/s", "NGINX_KEY_RATE_BURST": 1},
    )  # fmt: skip
    extra_nginx.append(limited.start())
    https, cert = secured.https, secured.cert
    for key in (*KEYS.values(), WRONG_KEY, ADMIN_TOKEN):
        for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
            post(https("/predict"), {"input": IRIS_ROW}, cert, **headers)
            post(https("/predict"), {"input": [1.0]}, cert, **headers)  # a 400 is logged
            post(https("/v1/models/nope:predict"), {"instances": []}, cert, **headers)
            requests.post(https("/v2/repository/index"), headers=headers, verify=cert)
            requests.post(secured.nginx.internal_url + "/v2/repository/index", headers=headers)
            requests.get(https("/metrics"), headers=headers, verify=cert)
            burst(limited.url + "/predict", 4, headers)  # 429s: nginx logs the limiting
    logs = [p for p in secured.run_dir.rglob("*") if p.is_file() and p.suffix in (".log",)]
    names = {p.name for p in logs}
    assert {"access.log", "error.log", "gunicorn-keyed.log"} <= names, names
    text = {p: p.read_text(errors="replace") for p in logs}
    assert "limiting requests" in text[limited.error_log]
    assert json.loads(text[secured.nginx.access_log].splitlines()[-1])  # logs are not empty
    for name, secret in [*KEYS.items(), ("wrong key", WRONG_KEY), ("admin token", ADMIN_TOKEN)]:
        leaked = [str(p) for p, t in text.items() if secret in t]
        assert not leaked, f"the {name} appears in {leaked}"
