"""Prometheus metrics of the service, one definition each.

With more than one gunicorn worker, prometheus-client runs in multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR`` set before import): each worker writes its
own mmap'd files and ``/metrics`` merges them at scrape time. The gunicorn
config wipes that directory at start and marks dead workers.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _mp

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
if MULTIPROCESS:
    # A label-less metric opens its file in the directory at import: a process that
    # imports this module before gunicorn's config creates it (the image's entrypoint
    # runs `predictor signing-key init` first) would otherwise die on FileNotFoundError.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

# Latency buckets tuned for a service whose whole request takes ~0.2–20 ms.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
ROWS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000)
# Regression outputs: a symmetric 1-2-5 ladder wide enough for most targets.
_POS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
VALUE_BUCKETS = tuple(-v for v in reversed(_POS)) + (0.0,) + _POS

HTTP_REQUESTS = Counter(
    "predictor_http_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "predictor_http_request_duration_seconds",
    "Time from request start to response, by route template, method and status code.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
RESPONSES_CUT_SHORT = Counter(
    "predictor_responses_cut_short_total",
    "Responses a worker died while sending, so the client got fewer bytes than their "
    "Content-Length (counted by the gunicorn master). Only a response the kernel did not "
    "take in one write can be cut: one larger than the socket buffer, or streamed.",
)
INFLIGHT = Gauge(
    "predictor_http_requests_in_flight",
    "Requests being handled right now, summed over workers.",
    multiprocess_mode="livesum",
)
INFERENCE_DURATION = Histogram(
    "predictor_inference_duration_seconds",
    "Time spent in the model runtime for the rows that missed the cache.",
    ["model", "version", "runtime"],
    buckets=LATENCY_BUCKETS,
)
REQUEST_ROWS = Histogram(
    "predictor_request_rows",
    "Rows carried by each prediction request.",
    ["model"],
    buckets=ROWS_BUCKETS,
)
CACHE_HITS = Counter(
    "predictor_cache_hits_total", "Rows answered from the prediction cache.", ["model"]
)
CACHE_MISSES = Counter(
    "predictor_cache_misses_total", "Rows not found in the prediction cache.", ["model"]
)
CACHE_INVALID = Counter(
    "predictor_cache_invalid_total",
    "Cached values that did not match the model's outputs (poisoned or garbage): "
    "answered from the model instead.",
    ["model"],
)
CACHE_ERRORS = Counter(
    "predictor_cache_errors_total",
    "Cache calls that failed or were skipped while the backend was unreachable.",
    ["backend"],
)
MODEL_INFO = Gauge(
    "predictor_model_info",
    "1 for the version each worker (pid label) serves now, 0 for versions it served before.",
    ["model", "version", "sha256", "runtime", "runtime_reason"],
    multiprocess_mode="liveall",
)
MODEL_LOADS = Counter(
    "predictor_model_loads_total", "Model versions loaded and swapped in.", ["model", "version"]
)
MODEL_LOAD_FAILURES = Counter(
    "predictor_model_load_failures_total",
    "Model versions refused at load (the previous version kept serving), by reason.",
    ["model", "version", "reason"],
)
STORE_ERRORS = Counter(
    "predictor_store_errors_total",
    "Model store calls that failed (the service kept serving what it had loaded).",
    ["backend", "operation"],
)
VERSION_REQUESTS = Counter(
    "predictor_version_requests_total",
    "Prediction requests naming no version, by the version that answered, its role "
    "(current or canary) and outcome (error = 5xx or the model refused the rows).",
    ["model", "version", "role", "outcome"],
)
VERSION_DURATION = Histogram(
    "predictor_version_request_duration_seconds",
    "Time to answer prediction requests naming no version, by version and role.",
    ["model", "version", "role"],
    buckets=LATENCY_BUCKETS,
)
CANARY_PERCENT = Gauge(
    "predictor_canary_percent",
    "Share (percent) of unpinned requests each worker sends to a canary version; 0 = ended.",
    ["model", "version"],
    multiprocess_mode="liveall",
)
MODEL_BROKEN = Gauge(
    "predictor_model_broken",
    "Broken parts of a model in the store, per worker: current (its pointer is unreadable), "
    "manifest (versions whose manifest is unreadable), artifact (its current version refused).",
    ["model", "part"],
    multiprocess_mode="livemax",
)
PREDICTIONS = Counter(
    "predictor_predictions_total",
    "Classifier predictions, by output label.",
    ["model", "version", "label"],
)
PREDICTION_VALUES = Histogram(
    "predictor_prediction_value",
    "Regressor prediction values.",
    ["model", "version"],
    buckets=VALUE_BUCKETS,
)
EXPLAIN_REQUESTS = Counter(
    "predictor_explain_requests_total",
    "Explain requests (:explain, V2 explanation output), by model, method and outcome "
    "(ok, unsupported, bad_input, error).",
    ["model", "method", "status"],
)
EXPLAIN_DURATION = Histogram(
    "predictor_explain_duration_seconds",
    "Time to explain a request's rows (estimator + explainer), by method.",
    ["method"],
    buckets=LATENCY_BUCKETS,
)

# Per model version, what the Open Inference Protocol statistics extension reports
# (GET /v2/models/{name}/stats, service/statistics.py): observed by the data plane.
MODEL_REQUEST_DURATION = Histogram(
    "predictor_model_request_duration_seconds",
    "Prediction requests per model version, by outcome (success or fail), and their time "
    "in the data plane (cache, runtime, metrics).",
    ["model", "version", "outcome"],
    buckets=LATENCY_BUCKETS,
)
MODEL_ROWS = Counter(
    "predictor_model_rows_total",
    "Rows predicted per model version (the statistics extension's inference_count).",
    ["model", "version"],
)
MODEL_LAST_REQUEST = Gauge(
    "predictor_model_last_request_timestamp_seconds",
    "Unix time of the last successful prediction request per model version.",
    ["model", "version"],
    multiprocess_mode="max",
)

GRPC_REQUESTS = Counter(
    "predictor_grpc_requests_total",
    "Open Inference Protocol gRPC calls answered, by method and status code.",
    ["method", "code"],
)
GRPC_DURATION = Histogram(
    "predictor_grpc_request_duration_seconds",
    "Time from a gRPC call's start to its answer, by method and status code.",
    ["method", "code"],
    buckets=LATENCY_BUCKETS,
)


def render() -> tuple[bytes, str]:
    """The exposition text of every worker (multiprocess) or of this process."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        _mp.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """Called from gunicorn's child_exit so a dead worker's live gauges vanish."""
    if MULTIPROCESS:
        _mp.mark_process_dead(pid)


def collect() -> list:
    """The metric families of every worker (multiprocess) or of this process, parsed."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        _mp.MultiProcessCollector(registry)
        return list(registry.collect())
    from prometheus_client import REGISTRY

    return list(REGISTRY.collect())
