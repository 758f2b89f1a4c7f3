"""The front under attack, for real: gunicorn (2 workers) behind nginx (issue 15, 6 and 10).

- finding 6: each made-up HTTP method added ~20 Prometheus series (300 requests took
  /metrics from 98 KB to 803 KB), directly and through nginx;
- finding 10: ``%0a`` in a URL path wrote forged lines into the service log, through
  nginx too; answers lacked ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import contextlib
import random
import re
import shutil
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tools.stack import Gunicorn, Nginx

from ..conftest import IRIS_ROW

PATHS = ["/predict", "/v1/models/iris:predict", "/v2/models/iris/infer", "/no/such/route"]
FORGED = "FORGED-LINE level=ERROR admin logged in"


@dataclass
class Front:
    api: Gunicorn
    nginx: Nginx


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, demo_store_template: Path) -> Iterator[Front]:
    run_dir = tmp_path_factory.mktemp("front-hardening")
    store = run_dir / "models"
    shutil.copytree(demo_store_template, store)
    with contextlib.ExitStack() as cleanup:
        api = Gunicorn(run_dir, store, workers=2, inherit_settings=False).start()
        cleanup.callback(api.stop)
        # The rate limit is not under test here: every request must reach the app.
        values = {"NGINX_RATE_LIMIT": "10000r/s", "NGINX_RATE_BURST": "10000"}
        nginx = Nginx(run_dir, [api.address], values=values).start()
        cleanup.callback(nginx.stop)
        yield Front(api, nginx)


def _series(api: Gunicorn) -> set[str]:
    text = requests.get(f"{api.url}/metrics", timeout=10).text
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line.startswith("predictor_")}


def _made_up_methods(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(string.ascii_uppercase, k=10)) for _ in range(n)]


def test_made_up_methods_do_not_grow_metrics(front: Front) -> None:
    for base in (front.api.url, front.nginx.url):  # warm up: the "other" series exist once
        for path in PATHS:
            requests.request("WARMUP", base + path, timeout=10)
    for _ in range(4):  # /metrics's own series, in both workers
        requests.get(f"{front.api.url}/metrics", timeout=10)
    time.sleep(2.5)  # every worker's watcher has published its per-model gauges
    before = _series(front.api)
    size_before = len(requests.get(f"{front.api.url}/metrics", timeout=10).content)

    statuses = []
    for i, method in enumerate(_made_up_methods(300, seed=15)):
        base = front.nginx.url if i % 2 else front.api.url
        statuses.append(requests.request(method, base + PATHS[i % len(PATHS)], timeout=10))
    assert {r.status_code for r in statuses} <= {404, 405}  # every one reached the app
    assert sum(r.status_code == 405 for r in statuses) >= 200

    after = _series(front.api)
    assert after - before == set(), sorted(after - before)[:5]
    text = requests.get(f"{front.api.url}/metrics", timeout=10).text
    assert 'method="other"' in text and "ABCDEFGHIJ" not in text
    assert not re.search(r'method="[A-Z]{10}"', text)
    assert len(text.encode()) < size_before + 2048  # counters grow in value, not in series


@pytest.mark.parametrize("via", ["app", "nginx"])
def test_newline_in_a_path_cannot_forge_a_log_line(front: Front, via: str) -> None:
    base = front.api.url if via == "app" else front.nginx.url
    tag = f"{via}-{random.randrange(10**9)}"
    for encoded in ("%0a", "%0d%0a", "%0A%1b[2K"):
        answer = requests.get(f"{base}/x{encoded}{FORGED}-{tag}", timeout=10)
        assert answer.status_code == 404

    app_lines = front.api.log_file.read_text(errors="replace").splitlines()
    mentions = [line for line in app_lines if tag in line]
    assert len(mentions) == 3, mentions  # one record per request, each one line
    assert not [line for line in app_lines if line.startswith("FORGED")]
    assert all("\\x0a" in line for line in mentions)
    if via == "nginx":
        entries = front.nginx.access_log_entries()  # raises if any line is not one JSON object
        logged = [e for e in entries if tag in e["uri"]]
        assert len(logged) == 3
        quoted = FORGED.replace(" ", "%20")
        assert logged[0]["uri"].lower() == f"/x%0a{quoted}-{tag}".lower()
        raw = front.nginx.access_log.read_text().splitlines()
        assert not [line for line in raw if line.startswith("FORGED")]


def test_header_values_with_control_characters_never_forge_a_log_line(front: Front) -> None:
    # A raw CR/LF cannot be sent in a header; a vertical tab and ESC can. nginx refuses them.
    agent = f"agent\x0b{FORGED}\x1b[31m"
    answer = requests.get(f"{front.nginx.url}/healthz", headers={"User-Agent": agent}, timeout=10)
    assert answer.status_code in (200, 400)
    front.nginx.access_log_entries()  # every line is still one JSON object
    raw = front.nginx.access_log.read_text().splitlines()
    assert not [line for line in raw if "\x1b" in line or line.startswith("FORGED")]


@pytest.mark.parametrize("via", ["app", "nginx"])
def test_every_answer_says_nosniff(front: Front, via: str) -> None:
    base = front.api.url if via == "app" else front.nginx.url
    answers = [
        requests.post(f"{base}/predict", json={"input": IRIS_ROW}, timeout=10),
        requests.post(
            f"{base}/predict", data=b"{", headers={"Content-Type": "application/json"}, timeout=10
        ),  # fmt: skip
        requests.get(f"{base}/no/such/route", timeout=10),
        requests.get(f"{base}/", timeout=10),
        requests.get(f"{base}/readyz", timeout=10),
        requests.request("BREW", f"{base}/predict", timeout=10),
    ]
    if via == "nginx":  # nginx's own answers too
        answers += [
            requests.get(f"{base}/metrics", timeout=10),
            requests.post(f"{base}/predict", data=b"x" * (2 << 20), timeout=10),
        ]
    for answer in answers:
        assert answer.headers.get("X-Content-Type-Options") == "nosniff", (
            answer.request.method, answer.request.url, answer.status_code, dict(answer.headers),
        )  # fmt: skip
