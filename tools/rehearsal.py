"""Rolling-update rehearsal: what a Deployment with maxSurge 1 / maxUnavailable 0 does.

No cluster runs here, so two gunicorn "pods" behind nginx play it out, step by
step as Kubernetes would:

1. maxSurge 1: a new pod starts next to the old one, with its own config (its own
   store directory whose ``current`` is the new version: a new pod template);
2. readiness gates traffic: the new pod joins nginx's upstream (a reload) only
   once its ``/readyz`` answers 200;
3. maxUnavailable 0: only then is the old pod terminated. Kubernetes sends
   SIGTERM and removes the pod from the endpoints at the same time, and the
   endpoints reach the proxy a little later (``endpoint_lag``); the pod's drain
   (``PREDICTOR_DRAIN_SECONDS``: readiness 503, listener still open) covers that
   lag, then gunicorn's graceful stop lets in-flight requests finish;
4. the old pod exits within its grace period.

Run it under Locust load (50 users) and get its row of the zero-downtime table::

    python -m tools.rehearsal                 # ~60 s of load
    python -m tools.rehearsal --seconds 15    # short form

``rolling_update`` is the mechanism; ``python -m tools.load_scenarios`` runs it as
scenario "rehearsal" next to the other scenarios.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tools.stack import Gunicorn, Nginx, StackError, child_pids, wait_until


@dataclass
class Rollout:
    """Epoch times (time.time()) of each step of one rolling update."""

    started: float = 0.0
    new_ready: float = 0.0
    both_serving: float = 0.0
    old_terminated: float = 0.0
    cut_over: float = 0.0  # no nginx worker can send a request to the old pod any more
    old_exited: float = 0.0
    steps: list[str] = field(default_factory=list)

    def timeline(self) -> str:
        return "\n".join(self.steps)


def rolling_update(
    nginx: Nginx,
    old: Gunicorn,
    new: Gunicorn,
    *,
    endpoint_lag: float = 0.5,
    exit_timeout: float = 60.0,
    log: Callable[[str], None] = print,
) -> Rollout:
    """Replace ``old`` by ``new`` behind ``nginx``; ``new`` is configured but not started."""
    r = Rollout(started=time.time())

    def step(text: str) -> None:
        line = f"+{time.time() - r.started:6.2f}s  {text}"
        r.steps.append(line)
        log(line)

    step(f"maxSurge 1: start the new pod {new.name} on {new.address} (store {new.store})")
    new.start()  # returns once /readyz answers 200
    r.new_ready = time.time()
    step(f"{new.name} is ready (/readyz 200)")

    nginx.reload(upstreams=[old.address, new.address])
    r.both_serving = time.time()
    step(f"nginx upstream: {old.address} + {new.address} (reloaded)")

    # maxUnavailable 0 held: the new pod serves, so the old one may go.
    before = child_pids(nginx.pid) if nginx.pid else set()
    old.signal(signal.SIGTERM)
    r.old_terminated = time.time()
    step(f"SIGTERM {old.name} (pid {old.pid}): readiness 503, listener open while it drains")
    time.sleep(endpoint_lag)  # the endpoints update reaches the proxy a little later
    nginx.reload(upstreams=[new.address])
    # Old nginx workers finish their in-flight requests and exit; until then they may still
    # send a request to the old pod (still draining, so it answers).
    wait_until(
        lambda: not (child_pids(nginx.pid) & before),
        30,
        "the nginx workers of the old config exit",
        nginx.alive,
    )
    r.cut_over = time.time()
    step(f"nginx upstream: {new.address} only; the old config's workers are gone (cut-over)")

    if not old.wait(exit_timeout):
        raise StackError(f"{old.name} did not exit within {exit_timeout:g}s of SIGTERM")
    r.old_exited = time.time()
    step(f"{old.name} exited {r.old_exited - r.old_terminated:.2f}s after SIGTERM")
    return r


def main(argv: list[str] | None = None) -> int:
    from tools import load_scenarios

    return load_scenarios.main(
        ["--only", "rehearsal", *(argv if argv is not None else sys.argv[1:])]
    )


if __name__ == "__main__":
    sys.exit(main())
