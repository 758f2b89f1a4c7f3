"""A worker that dies mid-response, through the real nginx and gunicorn.

Two pods (one sync worker each) behind nginx from the repo's template. Pod A starts
with a stop file (service/worker.py): its worker stops itself at a named point of a
request's life and the test SIGKILLs it there. What the client got is read byte by
byte: a 200 counts only with its whole Content-Length and a parseable answer.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.worker import StopPoints
from tests.helpers import scrape, total
from tools.stack import Gunicorn, Nginx, wait_until

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@dataclass
class Pods:
    run_dir: Path
    a: Gunicorn  # the one that stops
    b: Gunicorn
    stops: StopPoints


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory, demo_store_template: Path) -> Iterator[Pods]:
    run_dir = tmp_path_factory.mktemp("atomic")
    store = run_dir / "models"
    shutil.copytree(demo_store_template, store)
    stops = StopPoints(run_dir / "stop")
    with contextlib.ExitStack() as cleanup:
        pods = []
        for name, env in (("pod-a", {"PREDICTOR_TEST_STOP_FILE": str(stops.path)}), ("pod-b", {})):
            pod = Gunicorn(run_dir, store, name=name, workers=1, env=env, inherit_settings=False)
            cleanup.callback(pod.stop)
            pods.append(pod.start())
        yield Pods(run_dir, pods[0], pods[1], stops)


@pytest.fixture
def nginx(pods: Pods) -> Iterator[Nginx]:
    """A fresh nginx per test: no peer still marked failed by the previous kill."""
    pods.stops.clear()
    pods.a.wait_ready()
    front = Nginx(
        pods.run_dir, [pods.a.address, pods.b.address], name=f"nginx-{secrets.token_hex(3)}"
    )
    front.start()
    try:
        yield front
    finally:
        front.stop()
        pods.stops.clear()


@dataclass
class Seen:
    """What one client saw: status, headers, the body bytes that arrived, and whether all did."""

    request_id: str
    status: int | None = None
    headers: dict[str, str] | None = None
    body: bytes = b""
    complete: bool = False
    error: str | None = None

    def answer(self) -> dict | None:
        """The parsed answer when it is a whole, well-formed 200, else None."""
        if self.status != 200 or not self.complete:
            return None
        try:
            answer = json.loads(self.body)
        except ValueError:
            return None
        return answer if "predictions" in answer and "version" in answer else None


def post(port: int, body: dict, timeout: float = 30.0) -> Seen:
    seen = Seen(request_id=f"atomic-{secrets.token_hex(6)}")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST", "/v1/models/iris:predict", body=json.dumps(body),
            headers={"Content-Type": "application/json", "X-Request-ID": seen.request_id},
        )  # fmt: skip
        response = conn.getresponse()
        seen.status, seen.headers = response.status, dict(response.getheaders())
        try:
            seen.body = response.read()
            seen.complete = True
        except http.client.IncompleteRead as exc:  # fewer bytes than Content-Length
            seen.body = exc.partial
    except (OSError, http.client.HTTPException) as exc:
        seen.error = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return seen


def kill_at(pods: Pods, nginx: Nginx, point: str, tries: int = 8) -> tuple[Seen, int]:
    """Arm ``point`` on pod A, send requests until one stops a worker there, SIGKILL it;
    what that request's client saw, and the PID killed."""
    pods.stops.arm(point)
    for _ in range(tries):
        result: list[Seen] = []
        client = threading.Thread(
            target=lambda out=result: out.append(post(nginx.port, {"instances": IRIS_ROWS}))
        )
        client.start()
        victim = None
        # Past its answer (``written``) a worker may stop after its client is done: look
        # a little longer than the client lasts.
        deadline, grace = time.monotonic() + 10, None
        while time.monotonic() < deadline and (grace is None or time.monotonic() < grace):
            victim = pods.stops.stopped_worker()
            if victim is not None:
                break
            if grace is None and not client.is_alive():
                grace = time.monotonic() + 1.0
            time.sleep(0.01)
        if victim is None:  # pod B answered it (round robin): the next one goes to A
            client.join(30)
            continue
        os.kill(victim, signal.SIGKILL)
        client.join(30)
        assert not client.is_alive(), "the client hung after the kill"
        return result[0], victim
    raise AssertionError(f"no request stopped pod A's worker at {point!r} in {tries} tries")


def log_entry(nginx: Nginx, request_id: str) -> dict:
    wait_until(
        lambda: any(e["request_id"] == request_id for e in nginx.access_log_entries()),
        5, f"access log line of {request_id}",
    )  # fmt: skip
    return next(e for e in nginx.access_log_entries() if e["request_id"] == request_id)


@pytest.mark.parametrize(
    "point",
    [
        "read",
        "predict",
        "write",
    ],
)
def test_killed_before_the_answer_is_out_nginx_retries(
    pods: Pods, nginx: Nginx, point: str
) -> None:
    """Killed before the whole answer left the worker: the client gets the whole answer
    from the other pod (nginx retried), never a 200 with a broken body."""
    seen, victim = kill_at(pods, nginx, point)
    entry = log_entry(nginx, seen.request_id)
    assert seen.error is None, seen.error
    assert seen.status == 200, (seen.status, seen.body[:200])
    length = int(seen.headers["Content-Length"])
    assert seen.complete and len(seen.body) == length, (
        f"a 200 with {len(seen.body)} of its {length} bytes: {seen.body[:120]!r}"
    )
    answer = {"predictions": ["setosa", "virginica"], "model": "iris", "version": "1"}
    assert seen.answer() == answer
    assert entry["upstream_addr"] == f"{pods.a.address}, {pods.b.address}", entry
    assert entry["upstream_status"] == "502, 200", entry
    assert entry["truncated"] == "false", entry


def test_killed_after_the_answer_is_out_the_client_has_it(pods: Pods, nginx: Nginx) -> None:
    """Killed once the whole answer is in the kernel: the client has all of it, from pod A."""
    seen, victim = kill_at(pods, nginx, "written")
    entry = log_entry(nginx, seen.request_id)
    assert seen.error is None, seen.error
    assert seen.status == 200 and seen.complete, (seen.status, seen.body[:200])
    assert len(seen.body) == int(seen.headers["Content-Length"])
    assert seen.answer()["predictions"] == ["setosa", "virginica"]
    assert entry["upstream_addr"] == pods.a.address, entry
    assert entry["truncated"] == "false", entry


def cut_short(pod: Gunicorn) -> float:
    return total(scrape(pod.url), "predictor_responses_cut_short_total")


def test_a_response_cut_short_is_named(pods: Pods, nginx: Nginx) -> None:
    """Killed with part of the response in the kernel (what a response larger than the
    socket buffer risks): the client can tell, and so can the access log and a metric."""
    before = cut_short(pods.a)
    seen, victim = kill_at(pods, nginx, "mid-write")
    entry = log_entry(nginx, seen.request_id)
    length = int(seen.headers["Content-Length"])
    # The client: a 200 whose connection closed short of its Content-Length.
    assert seen.status == 200 and not seen.complete, seen
    assert 0 < len(seen.body) < length, seen
    # nginx: the body it got from the upstream was shorter than the upstream said.
    assert entry["truncated"] == "true", entry
    assert int(entry["upstream_response_length"]) == len(seen.body) < length, entry
    assert int(entry["upstream_content_length"]) == length, entry
    # The pod's master saw the worker die while sending and counted it.
    pods.a.wait_ready()
    wait_until(lambda: cut_short(pods.a) == before + 1, 10, "the cut-short response counted")
    assert f"worker {victim} died while sending a response" in pods.a.log_file.read_text()
