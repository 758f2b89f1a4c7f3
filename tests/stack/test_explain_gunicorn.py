"""README's ``:explain`` curl example, verbatim, against the real gunicorn (2 workers)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.helpers import REPO, metrics_text, parse_samples, total
from tools.stack import Gunicorn


@pytest.fixture
def server(store_dir, tmp_path):
    gunicorn = Gunicorn(tmp_path / "run", store_dir, workers=2).start()
    try:
        yield gunicorn
    finally:
        gunicorn.stop()


def readme_explain_command() -> str:
    """The README's curl command for :explain (with its continuation line)."""
    text = (REPO / "README.md").read_text()
    found = re.search(r"^    (curl [^\n]*:explain[^\n]*\\\n[^\n]*)$", text, re.M)
    assert found, "README has no :explain curl example"
    return found.group(1).replace("\\\n", " ")


def test_readme_curl_example_explains_over_gunicorn(server):
    command = readme_explain_command()
    assert "localhost:8000" in command  # what `make run` serves
    command = command.replace("localhost:8000", f"127.0.0.1:{server.port}")
    for _ in range(4):  # both workers: each loads its own explainer on first use
        out = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True
        )
        body = json.loads(out.stdout)
        (row,) = body["explanations"]
        assert row["prediction"] == "setosa" and row["method"] == "tree_shap"
        assert row["output_kind"] == "probability" and len(row["contributions"]) == 4
        assert abs(row["base_value"] + sum(row["contributions"]) - row["output"]) <= 1e-6
    samples = parse_samples(metrics_text(server.url))
    name = "predictor_explain_requests_total"
    assert total(samples, name, model="iris-rf", method="tree_shap", status="ok") == 4
