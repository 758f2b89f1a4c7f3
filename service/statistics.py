"""The Open Inference Protocol statistics extension, from the service's own metrics.

Counts come from the Prometheus metrics every worker already writes (summed over
workers in multiprocess mode), so ``GET /v2/models/{name}/stats`` agrees with
``/metrics`` whichever worker answers:

- ``success`` / ``fail``: prediction requests and their time in the data plane
  (``predictor_model_request_duration_seconds``);
- ``inference_count``: rows predicted (``predictor_model_rows_total``);
- ``execution_count`` / ``compute_infer``: runtime calls for the rows the cache
  did not answer (``predictor_inference_duration_seconds``);
- ``last_inference``: ms since the epoch of the last successful request.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from . import metrics

_NS = 1e9


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0


@dataclass(slots=True)
class ModelStatistics:
    """One model version's counters, in the extension's vocabulary."""

    name: str
    version: str
    last_inference: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)


def collect_statistics(
    served: list[tuple[str, str]], name: str | None = None, version: str | None = None
) -> list[ModelStatistics]:
    """Every version seen in the metrics or served now, filtered to ``name``/``version``."""
    stats: dict[tuple[str, str], ModelStatistics] = {}

    def entry(model: str, ver: str) -> ModelStatistics | None:
        if (name is not None and model != name) or (version is not None and ver != version):
            return None
        if (model, ver) not in stats:
            stats[(model, ver)] = ModelStatistics(model, ver)
        return stats[(model, ver)]

    for model, ver in served:
        entry(model, ver)
    if name is not None and version is not None:
        entry(name, version)  # a known version nobody asked for yet: zeros
    sums: dict[tuple[str, str, str, str], float] = defaultdict(float)
    wanted = {
        "predictor_model_request_duration_seconds_count",
        "predictor_model_request_duration_seconds_sum",
        "predictor_model_rows_total",
        "predictor_model_last_request_timestamp_seconds",
        "predictor_inference_duration_seconds_count",
        "predictor_inference_duration_seconds_sum",
    }
    for family in metrics.collect():
        for sample in family.samples:
            if sample.name not in wanted:
                continue
            labels = sample.labels
            key = (sample.name, labels["model"], labels["version"], labels.get("outcome", ""))
            if sample.name.endswith("_timestamp_seconds"):
                sums[key] = max(sums[key], sample.value)
            else:  # counts and sums add up over workers (and runtimes)
                sums[key] += sample.value
    for (metric, model, ver, outcome), value in sums.items():
        s = entry(model, ver)
        if s is None:
            continue
        if metric == "predictor_model_request_duration_seconds_count":
            getattr(s, outcome).count = int(value)
        elif metric == "predictor_model_request_duration_seconds_sum":
            getattr(s, outcome).ns = int(value * _NS)
        elif metric == "predictor_model_rows_total":
            s.inference_count = int(value)
        elif metric == "predictor_model_last_request_timestamp_seconds":
            s.last_inference = int(value * 1000)
        elif metric == "predictor_inference_duration_seconds_count":
            s.execution_count = s.compute_infer.count = int(value)
        elif metric == "predictor_inference_duration_seconds_sum":
            s.compute_infer.ns = int(value * _NS)
    return [stats[k] for k in sorted(stats)]
