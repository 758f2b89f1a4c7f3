"""One log record is one line, whatever a logged value holds (issue 15, finding 10)."""

from __future__ import annotations

import io
import logging

import pytest

from service.logs import SafeFormatter, escape_controls


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("/x\nFORGED", "/x\\x0aFORGED"),
        ("a\r\nb", "a\\x0d\\x0ab"),
        ("\x1b[2Kclear", "\\x1b[2Kclear"),
        ("nul\x00", "nul\\x00"),
        ("c1\x85next", "c1\\x85next"),
        ("sep\u2028x", "sep\\u2028x"),
        ("plain /v1/models/iris:predict é", "plain /v1/models/iris:predict é"),
    ],
)
def test_escape_controls(raw: str, escaped: str) -> None:
    assert escape_controls(raw) == escaped


def test_formatter_keeps_each_record_on_one_line() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(SafeFormatter("%(levelname)s %(message)s"))
    log = logging.getLogger("test.safe")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("GET %s -> 404", "/x\n2026-12-01 ERROR forged")
        try:
            raise ValueError("bad\nERROR forged too")
        except ValueError:
            log.exception("failed on %s", "/y\n")
    finally:
        log.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines[0] == "WARNING GET /x\\x0a2026-12-01 ERROR forged -> 404"
    assert lines[1] == "ERROR failed on /y\\x0a"
    assert all(line.startswith("    ") for line in lines[2:])  # the traceback, indented
    assert not [line for line in lines if line.startswith(("ERROR forged", "2026"))]
