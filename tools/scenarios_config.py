"""What the zero-downtime scenarios (tools/load_scenarios.py) and the fault table
(tools/chaos.py) share: the model they serve, the bad versions they promote, the
limits they lift, and the way each prints its markdown table and reads its figures.

One place, so the two tables speak of the same model and versions and count the same
way (nearest-rank percentiles, a row fails with its problems in bold).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable

from tools.stack import StackError

MODEL = "iris"
GOOD, NEW = "1", "2"  # the version serving at the start; the one promoted under load
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]

# Every Locust user comes from 127.0.0.1, so nginx's per-client rate limit is lifted.
NGINX_NO_RATE_LIMIT = {"NGINX_RATE_LIMIT": "1000000r/s", "NGINX_RATE_BURST": "1000000"}

# --- tools/load_scenarios.py ---------------------------------------------------------
# A throwaway key for the scenarios' own store; the pods verify every artifact with it.
ZERO_DOWNTIME_SIGNING_KEY = "zero-downtime-rehearsal-key-0123456789abcdef"  # 32+ bytes
# Bad versions promoted under load (store polling) and the refusal reason each must give.
ZERO_DOWNTIME_BAD_VERSIONS: dict[str, tuple[str, str | None]] = {
    "3": ("corrupt artifact (bytes flipped)", "digest_mismatch"),
    "4": ("signed with another key", "bad_signature"),
    # the reason depends on the runtime that loads it (skops: corrupt_artifact)
    "5": ("truncated artifact, digest and signature redone", None),
}

# --- tools/chaos.py ----------------------------------------------------------------------
CHAOS_SIGNING_KEY = "chaos-signing-key-for-the-fault-table"  # 32+ bytes: the minimum
# Bad versions promoted under load: (what it is, the refusal reason every worker must give).
CHAOS_BAD_VERSIONS: dict[str, tuple[str, str]] = {
    "corrupt": ("a corrupt artifact (cut short; digest and signature redone)", "corrupt_artifact"),
    "tampered": ("a digest mismatch (a byte flipped after publishing)", "digest_mismatch"),
    "pickle": ("an unsigned pickle that runs a command when loaded", "unsigned"),
    "skops-os-system": ("a signed skops file holding posix.system", "untrusted_types"),
}
# What the store-writer row drops into the store (tools/attacks.py builds each one), with
# the refusal reason every worker must give. Each payload writes a marker if its code runs.
STORE_WRITER_VERSIONS: dict[str, tuple[str, str]] = {
    "sw-timeit": ("the timeit skops model, unsigned", "unsigned"),
    "sw-timeit-signed": ("the timeit skops model, signed with the real key", "untrusted_types"),
    "sw-manifest": ("a signed v1 whose manifest then had its labels swapped", "bad_signature"),
    "sw-replay": ("v1's signed files copied under a new version", "bad_signature"),
}


# --- the markdown tables ---------------------------------------------------------------


def verdict(notes: str, problems: list[str]) -> str:
    """A row's last cell: what it measured, then any failure in bold."""
    return notes + ("" if not problems else f" **FAILED: {'; '.join(problems)}**")


def markdown_table(header: str, rows: Iterable[str]) -> str:
    return "\n".join([header, *rows])


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values): the one both tables print."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def wait_for(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.05,
    errors: tuple[type[Exception], ...] = (OSError, ValueError),
) -> float:
    """Poll ``check`` (``errors`` count as not yet) until true; the time it first held.

    Unlike tools.stack.wait_until it returns that instant: the tables report how long
    each change took to reach every worker."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(*errors):
            if check():
                return time.time()
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)
