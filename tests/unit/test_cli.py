"""The ``predictor`` command: one-line errors, never a traceback.

Most cases call ``service.cli.main`` in this process (a new interpreter per command
would import scikit-learn and ONNX each time: most of the fast loop's CPU); the last
test runs the installed command as a user does, exit code and stderr included.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import joblib
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from service.cli import main

PREDICTOR = str(Path(sys.executable).with_name("predictor"))


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture):  # noqa: ANN201 - the runner
    """``run(*args, store=...)``: the command's exit code and output, in process."""

    def _run(*args: str, store: Path) -> Result:
        capsys.readouterr()
        try:
            code = main([*args, "--store", str(store)])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return _run


@pytest.fixture
def pipeline_file(tmp_path) -> Path:
    frame = pd.DataFrame({"height": [1.0, 2.0, 3.0, 4.0], "weight": [1.0, 1.5, 3.5, 4.0]})
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, [0, 0, 1, 1])
    path = tmp_path / "pipe.joblib"
    joblib.dump(model, path)
    return path


def test_publish_list_promote_rollback(run, store_dir, pipeline_file):
    result = run("publish", str(pipeline_file), "--name", "body", "--labels", "light,heavy",
                 "--promote", store=store_dir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "published body version 1 and made it current" in result.stdout
    run("publish", str(pipeline_file), "--name", "body", store=store_dir)
    listing = run("models", store=store_dir).stdout
    assert "body" in listing and "Pipeline" in listing and "iris" in listing
    promoted = run("promote", "body", "2", store=store_dir).stdout.splitlines()
    assert promoted == [
        "body: current version is now 2",
        "  workers pick it up within 1s (store polling)",
    ]
    assert "rolled back from version 2 to 1" in run("rollback", "body", store=store_dir).stdout
    assert (store_dir / "body" / "current").read_text().strip() == "1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["publish", "/nonexistent.joblib", "--name", "x"], "no such file: /nonexistent.joblib"),
        (["promote", "iris", "9"], "model 'iris' has no version '9'; available: 1"),
        (["promote", "nope", "1"], "model 'nope' not found"),
        (["rollback", "iris"], "has no earlier version"),
    ],
)
def test_errors_are_one_line(run, store_dir, args, message):
    result = run(*args, store=store_dir)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_schema_mismatch_and_bad_feature_spec(run, store_dir, pipeline_file, tmp_path):
    result = run(
        "publish", str(pipeline_file), "--name", "b", "--features", "a,b,c", store=store_dir
    )
    assert result.returncode == 1 and "schema mismatch" in result.stderr
    result = run("publish", str(pipeline_file), "--name", "b", "--features", "a:complex,b",
                 store=store_dir)  # fmt: skip
    assert result.returncode == 1 and "expected name or name:type" in result.stderr
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"not a pickle")
    result = run("publish", str(junk), "--name", "b", store=store_dir)
    assert result.returncode == 1 and "not a readable joblib/pickle file" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_arguments_are_usage_errors(run, store_dir):
    result = run("promote", "iris", store=store_dir)
    assert result.returncode == 2 and "usage:" in result.stderr


def test_the_installed_command_exits_1_with_one_line(store_dir):
    """As a user runs it: a separate process, its exit code, one line on stderr."""
    result = subprocess.run(
        [PREDICTOR, "promote", "nope", "1", "--store", str(store_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("predictor promote: error: model 'nope' not found"), line
    assert (store_dir / "iris" / "current").read_text().strip() == "1"


def test_cli_starts_before_the_metrics_directory_exists(tmp_path):
    """The image's entrypoint runs `predictor signing-key init` with gunicorn's
    PROMETHEUS_MULTIPROC_DIR set but not yet created; the CLI must still run."""
    metrics_dir = tmp_path / "shm" / "predictor-metrics"
    key = tmp_path / "keys" / "signing.key"
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PREDICTOR_SIGNING_KEY_FILE": str(key),
    }  # fmt: skip
    proc = subprocess.run(
        [PREDICTOR, "signing-key", "init"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("created"), proc.stdout
    assert key.stat().st_size > 0


def test_store_commands_start_without_importing_scikit_learn():
    """An operator's `predictor models` / `promote` / `rollback` only reads and writes the
    store: importing skops (which imports every scikit-learn estimator) made each take
    ~4 s on these cores before its first line."""
    probe = "import sys, service.cli; print([m for m in ('sklearn', 'skops') if m in sys.modules])"
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
