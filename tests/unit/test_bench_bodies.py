"""The benchmark's body generator: what wrk and loadtests/wrk_rows.lua really send.

wrk and the Lua script must send the same bodies to every server (that is what
makes the comparison fair), so these tests record the bodies wrk sends to a stub
HTTP server on loopback (no app, no server of ours).
"""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import REPO

LUA = REPO / "loadtests" / "wrk_rows.lua"
RANGES = ((4.3, 7.9), (2.0, 4.4), (1.0, 6.9), (0.1, 2.5))


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the servers under test
    disable_nagle_algorithm = True  # else delayed ACKs cap it at ~25 requests/s
    bodies: list[bytes]

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def wrk_bodies(protocol: str, rows: int, mode: str, seed: int) -> list[bytes]:
    """Bodies one second of wrk (1 connection) sends, in order."""
    handler = type("H", (Recorder,), {"bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/predict"
        argv = ["wrk", "-t1", "-c1", "-d1s", "-s", str(LUA), url, "--",
                protocol, str(rows), mode, str(seed)]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == 0, out.stderr
    assert "WRKJSON " in out.stdout
    return handler.bodies


def rows_of(protocol: str, body: bytes) -> list[list[float]]:
    doc = json.loads(body)
    if protocol == "seed":
        x = doc["input"]
        return [x] if not isinstance(x[0], list) else x
    if protocol == "v1":
        return doc["instances"]
    (tensor,) = doc["inputs"]
    assert tensor["name"] == "input-0" and tensor["datatype"] == "FP64"
    n, width = tensor["shape"]
    assert width == 4 and len(tensor["data"]) == n * 4
    return [tensor["data"][i * 4 : i * 4 + 4] for i in range(n)]


def test_same_seed_same_bodies_in_the_same_order() -> None:
    first = wrk_bodies("seed", 1, "unique", 7)
    second = wrk_bodies("seed", 1, "unique", 7)
    other = wrk_bodies("seed", 1, "unique", 8)

    n = min(len(first), len(second))
    assert n > 100
    assert first[:n] == second[:n]
    assert len(set(first)) == len(first)  # every request a fresh row: cache misses
    assert not set(first) & set(other)


@pytest.mark.parametrize(("protocol", "rows"), [("seed", 1), ("seed", 100), ("v1", 3), ("v2", 100)])
def test_bodies_speak_each_protocol_with_iris_rows(protocol: str, rows: int) -> None:
    bodies = wrk_bodies(protocol, rows, "unique", 1)

    for body in bodies[:20]:
        got = rows_of(protocol, body)
        assert len(got) == rows
        for row in got:
            assert all(lo <= v <= hi for v, (lo, hi) in zip(row, RANGES, strict=True))


def test_repeat_mode_sends_one_body() -> None:
    bodies = wrk_bodies("v2", 100, "repeat", 3)

    assert len(bodies) > 50 and len(set(bodies)) == 1
