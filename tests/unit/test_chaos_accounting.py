"""The chaos run's accounting on made-up answers: a failed request fails its row, a p99
above its bound or an empty window fails too (no servers; tests/deploy/test_chaos.py
runs the table for real)."""

from __future__ import annotations

from pathlib import Path

from tools import chaos
from tools.load_scenarios import Answer


def _accounted(answers: list[Answer], rows: list[chaos.Row]) -> chaos.Chaos:
    runner = chaos.Chaos.__new__(chaos.Chaos)
    runner.cfg = chaos.Config()
    runner.rows, runner.problems = rows, []
    runner.marker = Path("/nonexistent/marker")
    runner.answer_checks = {}  # rows that check what clients saw register here
    runner._account(answers, {"num_requests": len(answers), "num_failures": sum(
        1 for a in answers if a.error)})  # fmt: skip
    return runner


def test_a_failed_request_fails_its_row_only() -> None:
    answers = [Answer(10.0 + i, 5.0, 200, "1", None) for i in range(10)]
    answers[7] = Answer(17.0, 1.0, 502, None, "HTTP 502: bad gateway")
    rows = [chaos.Row("baseline", "b", 0.0, 15.0), chaos.Row("x", "x", 15.0, float("inf"))]
    _accounted(answers, rows)
    assert (rows[0].requests, rows[0].failed, rows[0].passed) == (5, 0, True)
    assert (rows[1].requests, rows[1].failed, rows[1].passed) == (5, 1, False)
    assert "HTTP 502" in rows[1].problems[0]
    assert "FAILED" in chaos.table_row(rows[1]) and "FAILED" not in chaos.table_row(rows[0])


def test_p99_bound_and_an_empty_window_fail() -> None:
    answers = [Answer(1.0 + i / 100, 10.0, 200, "1", None) for i in range(100)]
    answers += [Answer(5.0 + i / 100, 900.0, 200, "1", None) for i in range(100)]
    rows = [
        chaos.Row("baseline", "b", 0.0, 4.0),
        chaos.Row("redis-pause", "p", 4.0, 8.0, bounded_p99=True),
        chaos.Row("late", "l", 8.0, float("inf")),
    ]
    runner = _accounted(answers, rows)
    assert rows[0].passed and rows[0].p99_ms == 10.0
    assert not rows[1].passed and "p99 900 ms above 260 ms" in rows[1].problems[0]
    assert rows[2].problems == ["no load request fell in this fault's time"]
    assert runner.problems == []


def test_p99_bound_scales_with_a_slow_baseline() -> None:
    """On a loaded machine the baseline is slow too: 2.5x of it bounds a fault's p99."""
    answers = [Answer(1.0 + i / 100, 600.0, 200, "1", None) for i in range(100)]
    answers += [Answer(5.0 + i / 100, 1400.0, 200, "1", None) for i in range(100)]
    answers += [Answer(9.0 + i / 100, 1600.0, 200, "1", None) for i in range(100)]
    rows = [
        chaos.Row("baseline", "b", 0.0, 4.0),
        chaos.Row("redis-kill", "k", 4.0, 8.0, bounded_p99=True),
        chaos.Row("redis-pause", "p", 8.0, 12.0, bounded_p99=True),
    ]
    _accounted(answers, rows)
    assert rows[1].passed, rows[1].problems  # 1400 <= 2.5 x 600
    assert not rows[2].passed and "p99 1600 ms above 1500 ms" in rows[2].problems[0]
