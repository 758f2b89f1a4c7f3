"""Reading a /metrics page the way Prometheus would (for assertions in tests)."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families


def scrape(base_url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample on ``base_url/metrics`` keyed by (name, labels)."""
    text = requests.get(f"{base_url}/metrics", timeout=5).text
    samples: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def total(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)
