"""A quick run of the benchmark itself, for real (tests/unit/test_bench_bodies.py checks
the bodies its wrk script sends).

The smoke run starts our stack (redis-server, gunicorn, nginx) and the seed app
and loads each for a second; MLServer is left out (its venv is installed by
`make bench`, not by the tests).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def test_quick_bench_runs_our_stack_and_the_seed_app(
    demo_store_template: Path, tmp_path: Path
) -> None:
    store = tmp_path / "models"
    shutil.copytree(demo_store_template, store)
    argv = [
        sys.executable, str(REPO / "loadtests" / "bench.py"), "--quick",
        "--models", "iris", "--rows", "1", "--cases", "abd", "--duration", "1", "--warmup", "0",
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
        "(b) ours via nginx, hits",
        "(d) seed app (gunicorn 2 sync)",
    }
    for case, cells in table.items():
        print(f"{case}: {cells[3]} req/s")  # measured, not asserted: the machine sets it
        assert float(cells[3].replace(",", "")) > 0  # req/s
        assert cells[6] == "0"  # errors
        assert float(cells[7].replace(",", "")) > 0  # CPU µs per request
        assert float(cells[8]) > 10  # PSS MiB
    assert table["(d) seed app (gunicorn 2 sync)"][9] == "1.00×"
    assert "- zero errors: 0 — met" in out.stdout
    assert "workers share the model's pages" in out.stdout
    assert list(tmp_path.glob("bench-sklearn-*.md")) and list(tmp_path.glob("bench-sklearn-*.json"))
