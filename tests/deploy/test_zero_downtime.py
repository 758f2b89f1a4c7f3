"""Zero-downtime model updates under Locust load (50 users), the short form.

Each test runs one scenario of tools/load_scenarios.py against real gunicorn, nginx
and redis-server processes on free loopback ports, with Locust as its own process
(loadtests/zero_downtime_locustfile.py records the version of every answer), and
prints its row of the table. ~10 s of load per scenario; every wait is bounded.
The long form: ``make zero-downtime`` (docs/zero-downtime.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.load_scenarios import SCENARIOS, Config, build_store, run_scenario, table_row

USERS = 50
SECONDS = 10.0


@pytest.fixture(scope="module")
def signed_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris 1 (current) and 2, signed; 3-5 corrupt, wrongly signed, truncated."""
    return build_store(tmp_path_factory.mktemp("zero-downtime") / "store")


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario_loses_nothing(
    scenario: str, signed_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = Config(users=USERS, seconds=SECONDS, run_dir=tmp_path, log=lambda _line: None)
    row = run_scenario(scenario, cfg, signed_store)
    with capsys.disabled():
        print(f"\n{table_row(row)}")
    assert row.passed, row.problems
    assert row.failures == 0
    # 50 users for the whole sequence: even a slow, shared machine answers hundreds.
    assert row.requests >= 500, row
    assert row.converge_s is not None
