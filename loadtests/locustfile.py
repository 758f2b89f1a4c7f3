"""Locust load suite for the predictor, with an SLO gate.

Run it as its own process (``import locust`` monkey-patches the whole process
with gevent, so never import this file from pytest)::

    locust -f loadtests/locustfile.py --headless -H http://127.0.0.1:8080 \\
        -u 20 -r 20 -t 30s --slo-p99-ms 100 \\
        --html loadtests/results/load.html --json-file loadtests/results/load

``make load`` runs exactly that against the local stack.

Traffic mix (relative weights, 0 turns a kind off), each request named by
its route so the report has one line per route and batch shape:

    --w-v1-row     POST /v1/models/{name}:predict, one instance
    --w-v1-batch   POST /v1/models/{name}:predict, --batch-size instances
    --w-seed       POST /predict, one row (the seed article's contract)
    --w-v2         POST /v2/models/{name}/infer, one FP64 tensor [N, 4]

``--repeat-share`` is the share of requests whose rows come from a small fixed
pool (``--pool-size`` rows: cache hits once warm); the rest are fresh random
rows (cache misses). Every option also reads a ``LOCUST_*`` environment
variable (``--w-v2`` ← ``LOCUST_W_V2``) .

SLO gate, checked when the run ends: the process exits non-zero when the
failure ratio is above ``--slo-max-fail-ratio`` (default 0), when p99 of all
requests is above ``--slo-p99-ms`` (default: no latency gate), or when no
request was made at all. Every request checks the status code and the shape of
the answer, so a 200 with the wrong body is a failure too.
"""

from __future__ import annotations

import json
import logging
import random

from locust import FastHttpUser, events, task
from locust.exception import StopUser

# Iris feature ranges (min, max) seen in the dataset: random rows stay realistic.
FEATURE_RANGES = ((4.3, 7.9), (2.0, 4.4), (1.0, 6.9), (0.1, 2.5))

log = logging.getLogger("loadtests")


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    group = parser.add_argument_group("predictor load mix and SLO gate")

    def arg(name: str, **kw) -> None:
        env = "LOCUST_" + name.lstrip("-").replace("-", "_").upper()
        group.add_argument(name, env_var=env, **kw)

    arg("--model", default="iris", help="Model name for V1 and V2 routes (default iris).")
    arg("--w-v1-row", type=int, default=4, help="Weight of V1 single-row predicts.")
    arg("--w-v1-batch", type=int, default=1, help="Weight of V1 batch predicts.")
    arg("--w-seed", type=int, default=2, help="Weight of seed /predict single rows.")
    arg("--w-v2", type=int, default=1, help="Weight of V2 infer requests (tensor [N,4]).")
    arg("--batch-size", type=int, default=100, help="Rows in a V1 batch (default 100).")
    arg("--v2-rows", type=int, default=1, help="Rows in each V2 infer tensor (default 1).")
    arg(
        "--repeat-share",
        type=float,
        default=0.5,
        help="Share of requests drawn from the fixed row pool (cache hits), 0..1.",
    )
    arg("--pool-size", type=int, default=50, help="Distinct rows in the repeated pool.")
    arg("--think-ms", type=float, default=0.0, help="Pause per user between requests, ms.")
    arg("--rng-seed", type=int, default=12345, help="Seed of the row generator.")
    arg(
        "--min-requests-each",
        type=int,
        default=0,
        help="Stop once every enabled request kind was sent this many times (a run bounded "
        "by count; -t stays the time limit). 0 = run for -t.",
    )
    arg(
        "--slo-p99-ms",
        type=float,
        default=0.0,
        help="Fail the run when p99 of all requests exceeds this (ms); 0 = no latency gate.",
    )
    arg(
        "--slo-max-fail-ratio",
        type=float,
        default=0.0,
        help="Fail the run when failed/total requests exceeds this (default 0).",
    )


def _random_row(rng: random.Random) -> list[float]:
    return [round(rng.uniform(lo, hi), 4) for lo, hi in FEATURE_RANGES]


class RowSource:
    """Rows for a request: from the fixed pool (repeats) or freshly random (unique)."""

    def __init__(self, seed: int, pool_size: int, repeat_share: float) -> None:
        pool_rng = random.Random(seed)  # same pool in every user and every run
        self.pool = [_random_row(pool_rng) for _ in range(max(1, pool_size))]
        self.repeat_share = repeat_share
        self.rng = random.Random()  # fresh rows: a per-user stream, never repeated on purpose

    def rows(self, n: int) -> list[list[float]]:
        if self.rng.random() < self.repeat_share:
            start = self.rng.randrange(len(self.pool))
            return [self.pool[(start + i) % len(self.pool)] for i in range(n)]
        return [_random_row(self.rng) for _ in range(n)]


class PredictorUser(FastHttpUser):
    """One client sending the configured mix of V1, seed and V2 requests."""

    def on_start(self) -> None:
        o = self.environment.parsed_options
        self.model = o.model
        self.batch_size = o.batch_size
        self.v2_rows = o.v2_rows
        self.think = o.think_ms / 1000.0
        self.source = RowSource(o.rng_seed, o.pool_size, o.repeat_share)
        self.source.rng.seed(o.rng_seed * 1_000_003 + id(self))
        weights = {
            self.v1_row: o.w_v1_row,
            self.v1_batch: o.w_v1_batch,
            self.seed_row: o.w_seed,
            self.v2_infer: o.w_v2,
        }
        self.kinds = [k for k, w in weights.items() if w > 0]
        self.weights = [w for w in weights.values() if w > 0]
        if not self.kinds:
            log.error("every request weight is 0: nothing to send")
            raise StopUser()

    @task
    def one_request(self) -> None:
        kind = random.choices(self.kinds, self.weights)[0]
        kind()
        _count_and_maybe_stop(self.environment, kind.__name__, [k.__name__ for k in self.kinds])
        if self.think:
            self._sleep(self.think)

    def _sleep(self, seconds: float) -> None:
        import gevent

        gevent.sleep(seconds)

    # --- request kinds ------------------------------------------------------

    def v1_row(self) -> None:
        self._v1(1, f"/v1/models/{self.model}:predict [1 row]")

    def v1_batch(self) -> None:
        self._v1(self.batch_size, f"/v1/models/{self.model}:predict [{self.batch_size} rows]")

    def _v1(self, n: int, name: str) -> None:
        body = {"instances": self.source.rows(n)}
        self._post(f"/v1/models/{self.model}:predict", body, name, "predictions", n)

    def seed_row(self) -> None:
        body = {"input": self.source.rows(1)[0]}
        self._post("/predict", body, "/predict [1 row]", "prediction", 1)

    def v2_infer(self) -> None:
        n = self.v2_rows
        rows = self.source.rows(n)
        body = {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [n, len(FEATURE_RANGES)],
                    "datatype": "FP64",
                    "data": [v for row in rows for v in row],
                }
            ]
        }
        name = f"/v2/models/{self.model}/infer [{n} row{'s' if n > 1 else ''}]"
        self._post(f"/v2/models/{self.model}/infer", body, name, "outputs", n)

    def _post(self, path: str, body: dict, name: str, key: str, n: int) -> None:
        with self.client.post(
            path,
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
            name=name,
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            try:
                answer = resp.json()[key]
            except (ValueError, KeyError, TypeError):
                resp.failure(f"200 without {key!r} in a JSON body")
                return
            if key == "outputs":
                ok = bool(answer) and answer[0].get("shape", [None])[0] == n
            else:
                ok = len(answer) == n
            if not ok:
                resp.failure(f"expected {n} results in {key!r}")


_SENT: dict[str, int] = {}


def _count_and_maybe_stop(environment, kind: str, kinds: list[str]) -> None:
    """With --min-requests-each, end the run once every kind has its count (not a time)."""
    _SENT[kind] = _SENT.get(kind, 0) + 1
    wanted = environment.parsed_options.min_requests_each
    if wanted and environment.runner is not None and all(_SENT.get(k, 0) >= wanted for k in kinds):
        import gevent

        gevent.spawn(environment.runner.quit)  # not from this user's own greenlet


@events.quitting.add_listener
def _slo_gate(environment, **_kw) -> None:
    """Set the exit code from the SLO: failures, p99, and 'something ran at all'."""
    o = environment.parsed_options
    if o is None or environment.runner is None:
        return
    total = environment.stats.total
    problems = []
    if total.num_requests == 0:
        problems.append("no request was made")
    else:
        if total.fail_ratio > o.slo_max_fail_ratio:
            problems.append(
                f"failure ratio {total.fail_ratio:.4%} > {o.slo_max_fail_ratio:.4%} "
                f"({total.num_failures} of {total.num_requests})"
            )
        p99 = total.get_response_time_percentile(0.99)
        if o.slo_p99_ms and p99 > o.slo_p99_ms:
            problems.append(f"p99 {p99:.1f} ms > {o.slo_p99_ms:g} ms")
    summary = (
        f"{total.num_requests} requests, {total.num_failures} failed, "
        f"{total.total_rps:.1f} req/s, p50 {total.median_response_time:.1f} ms, "
        f"p99 {total.get_response_time_percentile(0.99) if total.num_requests else 0:.1f} ms"
    )
    _log_summary(environment.stats)
    if problems:
        log.error("SLO gate FAILED: %s (%s)", "; ".join(problems), summary)
        environment.process_exit_code = 1
    else:
        log.info("SLO gate passed: %s", summary)
        if not environment.runner.exceptions:
            environment.process_exit_code = 0


def _log_summary(stats) -> None:
    """One line per route and the commonest errors (--json-file silences Locust's tables)."""
    for entry in sorted(stats.entries.values(), key=lambda e: e.name):
        if not entry.num_requests:
            continue
        log.info(
            "%-48s %7d req %6d fail  %8.1f req/s  p50 %6.1f ms  p99 %6.1f ms",
            entry.name,
            entry.num_requests,
            entry.num_failures,
            entry.total_rps,
            entry.median_response_time,
            entry.get_response_time_percentile(0.99),
        )
    errors = sorted(stats.errors.values(), key=lambda e: -e.occurrences)
    for error in errors[:5]:
        log.error("%6d x %s: %s", error.occurrences, error.name, error.error)
