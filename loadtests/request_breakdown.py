"""Where one request's microseconds go inside the gunicorn worker: each step of the
seed route timed in-process, in the order the request meets them.

    .venv/bin/python loadtests/request_breakdown.py [--store DIR] [--model iris]
    make profile   (prints this table after py-spy's)

The steps are the real functions of service/, called on one iris row the way the
route calls them, each in a loop (median of 7 loops), in a process set up like a
gunicorn worker (prometheus-client in multiprocess mode, the shipped runtime, the
per-worker LRU in front of the cache), as CPU time of the thread (wall time on a
shared machine counts other people's work). ``whole app`` is one WSGI call of the Flask
app (no socket), as shipped (the seed route answered by the lean dispatch,
service/lean_dispatch.py) and with every route through Flask; ``bare Flask`` is a
Flask app with one route answering constant bytes: the framework's own request
context, routing and Response. What a worker
spends beyond ``whole app`` per request (measured from /proc under load by
profile_service.py) is gunicorn: accept, parse, send, close.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROW = [5.1, 3.5, 1.4, 0.2]


def _us(fn: Callable[[], object], repeat: int) -> float:
    """CPU µs per call (this thread's CPU time, not wall time: the machine is shared)."""
    loops = []
    for _ in range(7):
        start = time.thread_time()
        for _ in range(repeat):
            fn()
        loops.append((time.thread_time() - start) / repeat * 1e6)
    return statistics.median(loops)


def _environ(path: str, body: bytes) -> dict:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_X_REQUEST_ID": "0123456789abcdef0123456789abcdef",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def breakdown(store: Path, model_name: str = "iris", repeat: int = 2000) -> list[tuple[str, float]]:
    """(step, µs per call) for one 1-row seed request; see the module docstring."""
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="breakdown-"))
    import random

    import orjson
    from flask import Flask, Response

    from service import metrics
    from service.app import create_app
    from service.core import _row_keys
    from service.http import json_response
    from service.settings import Settings
    from service.state import EXTENSION
    from service.validation import rows_from_seed

    app = create_app(Settings(MODEL_STORE=store, DEFAULT_MODEL=model_name, LOG_LEVEL="warning"))
    flask_only = create_app(
        Settings(
            MODEL_STORE=store, DEFAULT_MODEL=model_name, LOG_LEVEL="warning", LEAN_DISPATCH=False
        )
    )
    dp = app.extensions[EXTENSION]
    model = dp.model(model_name)
    features = model.manifest.features
    body = orjson.dumps({"input": ROW})
    rows = rows_from_seed(orjson.loads(body), features, 1000)

    def call_app(application: Callable, path: str = "/predict") -> Callable[[], object]:
        def run() -> object:
            fresh = orjson.dumps({"input": [round(v + random.random(), 4) for v in ROW]})
            out = application(_environ(path, fresh), lambda status, headers: None)
            return b"".join(out)

        return run

    bare = Flask("bare")

    @bare.post("/predict")
    def constant() -> Response:
        return Response(b'{"prediction":["setosa"]}', mimetype="application/json")

    def fresh_rows() -> object:
        return rows + random.random()

    labels = ("/predict", "POST", "200")
    steps: list[tuple[str, Callable[[], object]]] = [
        ("whole app: one WSGI call of the Flask app, seed route, a fresh row", call_app(app)),
        (
            "whole app, every route through Flask (PREDICTOR_LEAN_DISPATCH=false)",
            call_app(flask_only),
        ),  # fmt: skip
        ("bare Flask: request context, routing, Response (constant body)", call_app(bare)),
        ("JSON decode (orjson.loads of the body)", lambda: orjson.loads(body)),
        (
            "validation (rows_from_seed -> float64 array)",
            lambda: rows_from_seed(orjson.loads(body), features, 1000),
        ),  # fmt: skip
        ("cache keying (blake2b of the row)", lambda: _row_keys(model.cache_prefix, rows)),
        ("model runtime alone (runtime.run)", lambda: model.runtime.run(rows, False)),
        (
            "prediction core: cache policy, runtime, model metrics (a miss)",
            lambda: dp.core.predict(model, fresh_rows()),
        ),  # fmt: skip
        (
            "data plane predict: core + per-version statistics metrics",
            lambda: dp.predict(model, fresh_rows()),
        ),  # fmt: skip
        (
            "HTTP metrics of after_request (labels + histogram + counter + in-flight)",
            lambda: (
                metrics.INFLIGHT.inc(),
                metrics.HTTP_DURATION.labels(*labels).observe(0.001),
                metrics.HTTP_REQUESTS.labels(*labels).inc(),
                metrics.INFLIGHT.dec(),
            ),
        ),  # fmt: skip
        (
            "JSON encode + Response (json_response)",
            lambda: json_response({"prediction": ["setosa"], "model": "iris", "version": "1"}),
        ),  # fmt: skip
    ]
    out = []
    for name, fn in steps:
        fn()
        out.append((name, _us(fn, repeat)))
        print(f"  {out[-1][1]:8.1f} µs  {name}", flush=True)
    return out


def table(steps: list[tuple[str, float]]) -> str:
    lines = ["| step (in-process, one 1-row request) | µs |", "|---|--:|"]
    lines += [f"| {name} | {us:,.1f} |" for name, us in steps]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", type=Path, default=ROOT / ".bench" / "store")
    p.add_argument("--model", default="iris")
    p.add_argument("--repeat", type=int, default=2000)
    args = p.parse_args(argv)
    print(table(breakdown(args.store.resolve(), args.model, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
