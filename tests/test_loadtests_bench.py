"""The benchmark's generator and a quick run of the benchmark itself, for real.

wrk and the Lua script must send the same bodies to every server (that is what
makes the comparison fair), so the first tests record what wrk really sends.
The smoke run starts our stack (redis-server, gunicorn, nginx) and the seed app
and loads each for a second; MLServer is left out (its venv is installed by
`make bench`, not by the tests).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "loadtests" / "wrk_rows.lua"
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


def test_quick_bench_runs_our_stack_and_the_seed_app(
    demo_store_template: Path, tmp_path: Path
) -> None:
    store = tmp_path / "models"
    shutil.copytree(demo_store_template, store)
    argv = [
        sys.executable, str(ROOT / "loadtests" / "bench.py"), "--quick",
        "--models", "iris", "--rows", "1", "--cases", "abd", "--duration", "1", "--warmup", "0",
        "--store", str(store), "--workdir", str(tmp_path / "bench"), "--out", str(tmp_path),
    ]  # fmt: skip
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    table = {
        line.split("|")[3].strip(): [c.strip() for c in line.split("|")[1:-1]]
        for line in out.stdout.splitlines()
        if line.startswith("| iris |")
    }
    assert set(table) == {
        "(a) ours via nginx, misses",
        "(b) ours via nginx, hits",
        "(d) seed app (gunicorn 2 sync)",
    }
    for cells in table.values():
        assert float(cells[3].replace(",", "")) > 10  # req/s
        assert cells[6] == "0"  # errors
        assert float(cells[7].replace(",", "")) > 0  # CPU µs per request
        assert float(cells[8]) > 10  # PSS MiB
    assert table["(d) seed app (gunicorn 2 sync)"][9] == "1.00×"
    assert "- zero errors: 0 — met" in out.stdout
    assert "workers share the model's pages" in out.stdout
    assert list(tmp_path.glob("bench-sklearn-*.md")) and list(tmp_path.glob("bench-sklearn-*.json"))
