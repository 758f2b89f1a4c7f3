"""The Locust suite against a real gunicorn: the SLO gate passes and fails for real.

Locust runs as its own process (importing it would monkey-patch this one with
gevent). Every run is bounded (-t, --stop-timeout, a subprocess timeout) and
sends traffic to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, scrape, total
from tools.stack import Gunicorn

LOCUST = REPO / ".venv" / "bin" / "locust"
LOCUSTFILE = REPO / "loadtests" / "locustfile.py"


@pytest.fixture(scope="module")
def api(demo_store_template: Path, tmp_path_factory: pytest.TempPathFactory):
    """Our service under gunicorn (2 workers, in-process cache) on a free port."""
    run = tmp_path_factory.mktemp("load-api")
    store = run / "models"
    shutil.copytree(demo_store_template, store)
    server = Gunicorn(run, store, workers=2).start()
    yield server
    server.stop()


def locust(host: str, out: Path, *args: str, seconds: int = 6) -> subprocess.CompletedProcess:
    assert LOCUST.exists(), f"{LOCUST} missing: pip install -r deps/pip-load.txt"
    argv = [
        str(LOCUST), "-f", str(LOCUSTFILE), "--headless", "-H", host,
        "-u", "10", "-r", "10", "-t", f"{seconds}s", "--stop-timeout", "2",
        "--html", str(out / "report.html"), "--json-file", str(out / "report"),
        "--only-summary", *args,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    # cwd: a directory with no locust.conf, so only these arguments count
    return subprocess.run(
        argv, cwd=out, env=env, capture_output=True, text=True, timeout=seconds + 40
    )


def metric_total(url: str, name: str) -> float:
    return total(scrape(url), name)


def test_mixed_load_passes_the_slo_gate(api: Gunicorn, tmp_path: Path) -> None:
    hits0 = metric_total(api.url, "predictor_cache_hits_total")
    misses0 = metric_total(api.url, "predictor_cache_misses_total")

    r = locust(
        api.url, tmp_path,
        "--w-v1-row", "4", "--w-v1-batch", "1", "--w-seed", "2", "--w-v2", "1",
        "--batch-size", "20", "--repeat-share", "0.5", "--pool-size", "10",
        "--slo-p99-ms", "30000", "--min-requests-each", "5", seconds=180,
    )  # fmt: skip

    assert r.returncode == 0, r.stderr[-3000:]
    assert "SLO gate passed" in r.stderr
    stats = json.loads((tmp_path / "report.json").read_text())
    by_name = {s["name"]: s for s in stats}
    assert set(by_name) == {
        "/v1/models/iris:predict [1 row]",
        "/v1/models/iris:predict [20 rows]",
        "/predict [1 row]",
        "/v2/models/iris/infer [1 row]",
    }
    assert all(s["num_failures"] == 0 for s in stats)
    # Bounded by count (--min-requests-each), not by time: -t only stops a hang.
    print({s["name"]: s["num_requests"] for s in stats})
    assert all(s["num_requests"] >= 5 for s in stats)
    assert (tmp_path / "report.html").stat().st_size > 10_000
    # The repeated share of rows came back from the cache, the fresh ones did not.
    hits = metric_total(api.url, "predictor_cache_hits_total") - hits0
    misses = metric_total(api.url, "predictor_cache_misses_total") - misses0
    print(f"cache hits {hits:.0f}, misses {misses:.0f}")
    assert hits > 0 and misses > 0


def test_p99_above_threshold_fails_the_gate(api: Gunicorn, tmp_path: Path) -> None:
    r = locust(api.url, tmp_path, "--w-seed", "1", "--slo-p99-ms", "0.001", seconds=3)

    assert r.returncode == 1, r.stderr[-3000:]
    assert re.search(r"SLO gate FAILED: p99 [\d.]+ ms > 0.001 ms", r.stderr), r.stderr[-2000:]
    stats = json.loads((tmp_path / "report.json").read_text())
    assert sum(s["num_failures"] for s in stats) == 0  # only latency failed the gate


def test_failed_requests_fail_the_gate(api: Gunicorn, tmp_path: Path) -> None:
    r = locust(
        api.url, tmp_path, "--model", "no-such-model", "--w-seed", "0", "--w-v2", "0",
        "--w-v1-batch", "0", "--slo-p99-ms", "5000", seconds=3,
    )  # fmt: skip

    assert r.returncode == 1, r.stderr[-3000:]
    assert "SLO gate FAILED: failure ratio 100.0000%" in r.stderr
    assert "HTTP 404" in r.stderr and "model_not_found" in r.stderr


def test_an_empty_mix_fails_the_gate(api: Gunicorn, tmp_path: Path) -> None:
    r = locust(api.url, tmp_path, "--w-v1-row", "0", "--w-v1-batch", "0", "--w-seed", "0",
               "--w-v2", "0", seconds=2)  # fmt: skip

    assert r.returncode == 1
    assert "no request was made" in r.stderr
