"""What more than one test file needs that is not a fixture: demo rows, the repository
root, a free port, a user-like DataFrame Pipeline, the JSON error shape, /metrics readers,
access-log lookups and a planted pickle bomb. Fixtures stay in tests/conftest.py (which
re-exports the constants, so ``from tests.conftest import IRIS_ROW`` keeps working)."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from service.store import ModelStore
from tools.stack import Nginx, free_port, wait_until

__all__ = [
    "IRIS_FEATURES",
    "IRIS_ROW",
    "IRIS_ROWS",
    "REPO",
    "RunsCode",
    "app_routes",
    "assert_json_error",
    "free_port",
    "log_entry",
    "metrics_text",
    "mixed",
    "onehot_pipeline",
    "parse_samples",
    "plant_pickle_bomb",
    "run_cli",
    "scrape",
    "total",
    "with_gaps",
]

REPO = Path(__file__).resolve().parents[1]

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
IRIS_FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
# One unambiguous row per class: setosa, versicolor, virginica (for any fitted model).
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.7, 3.0, 5.2, 2.3]]

Samples = dict[tuple[str, frozenset], float]


# --- errors ---------------------------------------------------------------------------


def assert_json_error(response: Any, status: int, code: str | None = None) -> dict:
    """``response`` (requests' or Flask's test client's) is a JSON error with ``status``.

    With ``code``: the V1/seed shape ``{"error": {"code": code, "message": "..."}}``;
    without: any ``{"error": ...}`` (V2 routes answer ``{"error": "<message>"}``).
    """
    assert response.status_code == status, response_text(response)
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json() if callable(response.json) else response.json
    assert "error" in body, body
    if code is not None:
        assert body["error"]["code"] == code, body
        assert body["error"]["message"], body
    return body


def response_text(response: Any) -> str:
    text = response.text
    return text if isinstance(text, str) else response.get_data(as_text=True)


# --- /metrics -------------------------------------------------------------------------


def metrics_text(base_url: str) -> str:
    """The exposition text of ``base_url/metrics``."""
    response = requests.get(f"{base_url}/metrics", timeout=5)
    assert response.status_code == 200, response.text
    return response.text


def parse_samples(text: str) -> Samples:
    """Every sample of an exposition text keyed by (name, labels), as Prometheus reads it."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def scrape(base_url: str) -> Samples:
    """Every sample on ``base_url/metrics`` keyed by (name, labels)."""
    return parse_samples(metrics_text(base_url))


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


# --- the CLI ----------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``predictor ARGS`` run in this process, answered as ``subprocess.run`` would: the
    exit status, stdout and stderr. The environment's PREDICTOR_* settings are set aside
    (only ``env``'s count), as for a fresh command. A new interpreter importing
    scikit-learn costs 15-60 s per call on a busy 2-core machine; tests/unit/test_cli.py
    runs the installed command itself."""
    from service import cli

    out, err = io.StringIO(), io.StringIO()
    saved = {k: v for k, v in os.environ.items() if k.startswith("PREDICTOR_")}
    try:
        for k in saved:
            del os.environ[k]
        os.environ.update(env or {})
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        for k in [k for k in os.environ if k.startswith("PREDICTOR_")]:
            del os.environ[k]
        os.environ.update(saved)
    return subprocess.CompletedProcess(["predictor", *args], code, out.getvalue(), err.getvalue())


# --- a user's model: a DataFrame Pipeline with string and numeric columns, gaps -------


def with_gaps(frame: Any, columns: list[str], rate: float = 0.1) -> Any:
    """``frame`` with about ``rate`` of each column's cells missing (NaN), seeded."""
    import numpy as np

    rng = np.random.default_rng(1)
    frame = frame.copy()
    for c in columns:
        frame.loc[rng.random(len(frame)) < rate, c] = np.nan
    return frame


def mixed(target_kind: str) -> Any:
    """600 rows: int ``age``, float ``income`` and string ``colour``/``city`` (income and
    city with gaps); the target bool, or the string classes "yes"/"no"."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(2)
    n = 600
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "income": rng.gamma(3.0, 15000.0, n).round(2),
            "colour": rng.choice(["red", "green", "blue"], n),
            "city": rng.choice(["paris", "oslo", "rome", "lima"], n),
        }
    )
    score = frame.age / 40 + (frame.colour == "red") - frame.income / 60000 + rng.normal(0, 0.3, n)
    frame["target"] = score > 0.9 if target_kind == "bool" else np.where(score > 0.9, "yes", "no")
    return with_gaps(frame, ["income", "city"], 0.08)


def onehot_pipeline() -> Any:
    """Impute + scale the numbers, impute + one-hot the strings, then LogisticRegression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return make_pipeline(
        ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "income"]),
                (
                    "cat",
                    make_pipeline(
                        SimpleImputer(strategy="most_frequent"),
                        OneHotEncoder(handle_unknown="ignore"),
                    ),
                    ["colour", "city"],
                ),
            ]
        ),
        LogisticRegression(max_iter=1000),
    )


# --- nginx ----------------------------------------------------------------------------


def log_entry(nginx: Nginx, request_id: str) -> dict:
    """The one access log line of ``request_id`` (nginx writes it as the request ends)."""
    found: list[dict] = []

    def logged() -> bool:
        found[:] = [e for e in nginx.access_log_entries() if e["request_id"] == request_id]
        return bool(found)

    wait_until(logged, 5, f"access log line for {request_id}")
    assert len(found) == 1, f"expected one access log line for {request_id}, got {found}"
    return found[0]


# --- the app's routes -----------------------------------------------------------------


@functools.cache
def app_routes() -> frozenset[str]:
    """Every URL rule of the app (built without models): what probes and configs may name."""
    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(MODEL_STORE=REPO / "no-such-store"), load_models=False)
    return frozenset(rule.rule for rule in app.url_map.iter_rules())


# --- a tampered artifact --------------------------------------------------------------


class RunsCode:
    """Unpickling this writes a marker file: proof that code ran at load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle's protocol
        return (os.system, (f"touch {self.marker}",))


def plant_pickle_bomb(
    store: ModelStore, name: str, version: str, marker: Path, **manifest_extra: Any
) -> Path:
    """A new version whose artifact is a code-running pickle with a matching digest."""
    from service.signing import file_sha256

    source = store.manifest(name, store.current(name))
    directory = store.version_dir(name, version)
    directory.mkdir()
    artifact = directory / "model.joblib"
    artifact.write_bytes(pickle.dumps(RunsCode(marker)))
    fields = source.model_dump(mode="json") | {
        "version": version, "format": "joblib", "artifact": "model.joblib",
        "sha256": file_sha256(artifact), "signature": None, "trusted_types": [], "compiled": None,
        "files": {},
    } | manifest_extra  # fmt: skip
    (directory / "manifest.json").write_text(json.dumps(fields))
    return directory


def resign(directory: Path, key: bytes | None = None) -> None:
    """Sign a version directory's manifest as publish would, after a test edited it or its
    files (the signature covers the whole manifest and the digest of every file)."""
    from service.manifest import Manifest
    from service.signing import sign, version_files
    from tests.conftest import TEST_SIGNING_KEY

    manifest = Manifest.read(directory)
    manifest.files = version_files(directory)
    manifest.signature = sign(key or TEST_SIGNING_KEY, manifest.signed_fields())
    manifest.write(directory)


def binary_request(payload: dict, blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """A V2 binary-extension body (JSON header, then the raw tensors) and its header."""
    header = json.dumps(payload, separators=(",", ":")).encode()
    return header + b"".join(blobs), {"Inference-Header-Content-Length": str(len(header))}
