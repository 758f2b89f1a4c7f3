"""A quick run of the benchmark itself, for real (tests/unit/test_bench_bodies.py checks
the bodies its wrk script sends).

The smoke run starts our stack (redis-server, gunicorn, nginx), the seed app and the
constant-JSON floor and loads each for a second, then serves a store of 2 models for
its memory figure; MLServer is left out (its venv is installed by `make bench`, not by
the tests).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def test_quick_bench_runs_our_stack_the_seed_app_and_the_floor(
    demo_store_template: Path, tmp_path: Path
) -> None:
    store = tmp_path / "models"
    shutil.copytree(demo_store_template, store)
    argv = [
        sys.executable, str(REPO / "loadtests" / "bench.py"), "--quick",
        "--models", "iris", "--rows", "1", "--cases", "adfg", "--duration", "1", "--warmup", "0",
        "--many-models", "2",
        "--store", str(store), "--workdir", str(tmp_path / "bench"), "--out", str(tmp_path),
    ]  # fmt: skip
    # 1 s per case; 600 s only stops a hang (a busy machine starts the stack slowly)
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)

    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    table = {
        line.split("|")[3].strip(): [c.strip() for c in line.split("|")[1:-1]]
        for line in out.stdout.splitlines()
        if line.startswith("| iris |")
    }
    assert set(table) == {
        "(a) ours via nginx, misses",
        "(d) seed app (gunicorn 2 sync)",
        "(f) floor: constant JSON (gunicorn 2 sync)",
        "(g) ours via nginx, V2 infer, misses",
    }
    for case, cells in table.items():
        print(f"{case}: {cells[3]} req/s")  # measured, not asserted: the machine sets it
        assert float(cells[3].replace(",", "")) > 0  # req/s
        assert cells[8] == "0"  # errors
        assert float(cells[9].replace(",", "")) > 0  # CPU µs per request
        assert float(cells[12]) > 5  # PSS MiB
    assert table["(d) seed app (gunicorn 2 sync)"][11] == "1.00×"  # req/s vs (d)
    assert table["(f) floor: constant JSON (gunicorn 2 sync)"][10] == "1.00×"  # CPU × floor
    assert "- zero errors: 0 — met" in out.stdout
    assert "- LR 1 row via nginx (a) / seed app (d), req/s:" in out.stdout
    assert "- iris 1 row(s) V2 infer (g) / seed route (a), req/s:" in out.stdout
    assert "PSS per worker, our stack" in out.stdout
    assert "one store of 2 models" in out.stdout
    assert "wrk -t1 -c16" in out.stdout  # the exact commands
    assert out.stdout.strip().splitlines()[-1].startswith("bench: 4 runs in ")
    assert list(tmp_path.glob("bench-auto-*.md")) and list(tmp_path.glob("bench-auto-*.json"))
