"""The code stays ruff clean (the same checks as `make lint`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

RUFF = str(Path(sys.executable).with_name("ruff"))


def test_ruff_check_and_format_are_clean():
    check = subprocess.run([RUFF, "check", "."], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run([RUFF, "format", "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout
