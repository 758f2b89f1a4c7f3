"""README stays true: every setting and every metric is documented, and the test command
CI runs is the one README gives."""

from __future__ import annotations

from prometheus_client.metrics import MetricWrapperBase

from service import metrics
from service.settings import Settings
from tests.helpers import REPO

README = (REPO / "README.md").read_text()


def test_every_setting_is_in_the_settings_table():
    missing = [f"PREDICTOR_{n}" for n in Settings.model_fields if f"`PREDICTOR_{n}`" not in README]
    assert missing == []


def test_every_metric_is_documented():
    names = [
        m._name + ("_total" if m._type == "counter" else "")
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
    ]
    assert len(names) >= 13
    assert [n for n in names if f"`{n}`" not in README] == []


def test_ci_runs_the_readme_test_command():
    assert "    make test " in README.split("## Try it")[0]
    assert "make test" in (REPO / ".ci" / "run").read_text().splitlines()[-1]


def test_readme_names_the_fast_inner_loop_and_make_runs_unit_and_app():
    assert "    make test-fast " in README.split("## Try it")[0]
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\ntest-fast:", 1)[1].split("\n\n", 1)[0]
    assert '-m "unit or app" tests/unit tests/app' in recipe
