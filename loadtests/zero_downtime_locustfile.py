"""Locust load for the zero-downtime scenarios: records the model version of every answer.

Run by ``tools/load_scenarios.py`` as its own process (``import locust``
monkey-patches the whole process with gevent, so never import this file)::

    locust -f loadtests/zero_downtime_locustfile.py --headless -H http://127.0.0.1:8080 \\
        -u 50 -r 50 -t 120s --answers-file answers.jsonl \\
        --ready-file ready --stop-file stop

Each user alternates the seed route (``POST /predict``) and the V1 route
(``POST /v1/models/iris:predict``) with one random iris row. An answer counts
as good only when it is a 200 whose body has one prediction and names the same
version as its ``X-Model-Version`` header; anything else (another status, a
connection error, a malformed body) is a Locust failure. Users keep their
connection alive unless ``--connection close`` (one connection per request).

Coordination with the scenario driver, through files:

- ``--answers-file``: one JSON array per request, written when the run ends:
  ``[start_epoch_s, latency_ms, status, version, error]`` (``error`` is null
  for a good answer). The driver derives failures, percentiles and which
  version answered when from it.
- ``--ready-file``: created once ``--ready-after`` good answers came back, so
  the driver acts only while load really flows.
- ``--stop-file``: the run ends (users stop, the answers are written) once this
  file exists; ``-t`` stays the hard upper bound.
"""

from __future__ import annotations

import json
import os
import random
import time

import gevent
from locust import FastHttpUser, events, task

# Iris feature ranges (min, max) seen in the dataset: random rows stay realistic.
FEATURE_RANGES = ((4.3, 7.9), (2.0, 4.4), (1.0, 6.9), (0.1, 2.5))

ANSWERS: list[list] = []
GOOD = 0


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    group = parser.add_argument_group("zero-downtime recording")
    group.add_argument("--answers-file", required=True, help="JSON lines, one per request.")
    group.add_argument("--ready-file", default="", help="Created after --ready-after answers.")
    group.add_argument("--ready-after", type=int, default=50, help="Good answers before ready.")
    group.add_argument("--stop-file", default="", help="The run ends once this file exists.")
    group.add_argument("--model", default="iris", help="Model of the V1 route (default iris).")
    group.add_argument("--think-ms", type=float, default=0.0, help="Pause per user, ms.")
    group.add_argument(
        "--connection",
        choices=("keep-alive", "close"),
        default="keep-alive",
        help="Reuse each user's connection (default) or open one per request.",
    )


@events.test_start.add_listener
def _watch_stop_file(environment, **_kw) -> None:
    stop_file = environment.parsed_options.stop_file
    if not stop_file:
        return

    def watch() -> None:
        while not os.path.exists(stop_file):
            gevent.sleep(0.05)
        environment.runner.quit()  # same path as -t running out: users stop, quitting fires

    gevent.spawn(watch)


@events.quitting.add_listener
def _write_answers(environment, **_kw) -> None:
    path = environment.parsed_options.answers_file
    with open(path + ".tmp", "w") as fh:
        for answer in ANSWERS:
            fh.write(json.dumps(answer, separators=(",", ":")) + "\n")
    os.replace(path + ".tmp", path)  # the driver never reads a half-written file


def _mark_good(environment) -> None:
    global GOOD
    GOOD += 1
    o = environment.parsed_options
    if o.ready_file and o.ready_after == GOOD:
        open(o.ready_file, "w").close()


class VersionRecordingUser(FastHttpUser):
    """One client: a prediction after another, each answer's version recorded."""

    def on_start(self) -> None:
        o = self.environment.parsed_options
        self.think = o.think_ms / 1000.0
        self.v1_path = f"/v1/models/{o.model}:predict"
        self.rng = random.Random()
        self.seed_turn = self.rng.random() < 0.5
        self.headers = {"Content-Type": "application/json"}
        if o.connection == "close":
            self.headers["Connection"] = "close"

    @task
    def predict(self) -> None:
        row = [round(self.rng.uniform(lo, hi), 3) for lo, hi in FEATURE_RANGES]
        self.seed_turn = not self.seed_turn
        if self.seed_turn:
            self._post("/predict", {"input": row}, "prediction")
        else:
            self._post(self.v1_path, {"instances": [row]}, "predictions")
        if self.think:
            gevent.sleep(self.think)

    def _post(self, path: str, body: dict, key: str) -> None:
        started = time.time()
        t0 = time.perf_counter()
        status, version, error = 0, None, None
        with self.client.post(
            path,
            data=json.dumps(body),
            headers=self.headers,
            name=path,
            catch_response=True,
        ) as resp:
            status = resp.status_code or 0
            if status != 200:
                error = f"HTTP {status}: {(resp.text or str(resp.error or ''))[:200]}"
            else:
                try:
                    answer = resp.json()
                    version = str(answer["version"])
                    if len(answer[key]) != 1:
                        error = f"expected 1 result in {key!r}"
                    elif resp.headers.get("X-Model-Version") != version:
                        error = "X-Model-Version header and body disagree"
                except (ValueError, KeyError, TypeError):
                    error = f"200 without {key!r} and 'version' in a JSON body"
            if error:
                resp.failure(error)
        latency_ms = (time.perf_counter() - t0) * 1000.0
        ANSWERS.append([round(started, 4), round(latency_ms, 2), status, version, error])
        if error is None:
            _mark_good(self.environment)
