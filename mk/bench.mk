# Load tests and the side-by-side benchmark (loadtests/, docs/benchmarks.md).
#
#   make load          Locust, headless, against the local stack (make stack), SLO-gated
#   make bench         our stack vs the seed app vs MLServer, printed as a markdown table
#   make bench-quick   the same, 1 round of 3 s per case (smoke)
#   make bench-explain predict p99 alone vs beside concurrent explains (also part of bench)
#   make bench-treeshap shap's TreeSHAP against our own implementation (exactness, µs/row)
#   make profile       py-spy flame graph of our gunicorn workers under wrk load
#
# Variables: LOAD_HOST, LOAD_USERS, LOAD_SPAWN_RATE, LOAD_TIME, LOAD_P99_MS, LOAD_ARGS,
# BENCH_ARGS (e.g. BENCH_ARGS="--runtime onnx --duration 20").

BENCH_DIR := .bench
MLSERVER_VENV := $(BENCH_DIR)/mlserver-venv
LOAD_RESULTS := loadtests/results

LOAD_HOST ?= http://127.0.0.1:8080
LOAD_USERS ?= 20
LOAD_SPAWN_RATE ?= 20
LOAD_TIME ?= 30s
# Each user pauses between requests so 20 users stay below nginx's per-client rate
# limit (200 r/s): this is an SLO check at a realistic rate, `make bench` measures capacity.
LOAD_THINK_MS ?= 150
LOAD_P99_MS ?= 100
LOAD_ARGS ?=
BENCH_ARGS ?=

.PHONY: load bench bench-quick bench-explain bench-treeshap mlserver-venv load-deps profile

$(VENV)/.load-installed: deps/pip-load.txt | $(VENV)/.installed
	$(PY) -m pip install -q -r deps/pip-load.txt
	touch $@

load-deps: $(VENV)/.load-installed
	@command -v wrk >/dev/null || { \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends wrk >/dev/null; }

## MLServer 1.7.1 + mlserver-sklearn in its own venv (case (e) of the benchmark).
$(MLSERVER_VENV)/.installed: loadtests/mlserver-requirements.txt
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/pip install -q -r loadtests/mlserver-requirements.txt
	touch $@

mlserver-venv: $(MLSERVER_VENV)/.installed

## Locust against the running local stack; exits non-zero when the SLO gate fails.
load: load-deps
	@curl -fsS -o /dev/null $(LOAD_HOST)/healthz || { \
	  echo "nothing answers at $(LOAD_HOST)/healthz: start the stack first (make stack)"; exit 1; }
	@mkdir -p $(LOAD_RESULTS)
	$(VENV)/bin/locust -f loadtests/locustfile.py --headless -H $(LOAD_HOST) \
	  -u $(LOAD_USERS) -r $(LOAD_SPAWN_RATE) -t $(LOAD_TIME) --stop-timeout 5 \
	  --think-ms $(LOAD_THINK_MS) --slo-p99-ms $(LOAD_P99_MS) \
	  --html $(LOAD_RESULTS)/load.html --json-file $(LOAD_RESULTS)/load --only-summary $(LOAD_ARGS)

## Every server in turn, interleaved, same wrk load and bodies; table in loadtests/results/.
bench: install load-deps mlserver-venv
	$(PY) loadtests/bench.py $(BENCH_ARGS)
	$(PY) loadtests/explain_interference.py

## Does explaining slow predictions? p99 of :predict alone and beside :explain, per EXPLAIN_NICE.
bench-explain: install
	$(PY) loadtests/explain_interference.py $(EXPLAIN_BENCH_ARGS)

## shap's TreeExplainer vs loadtests/own_treeshap.py: max abs difference and µs per row.
bench-treeshap: install
	$(PY) loadtests/explain_bench.py

bench-quick: install load-deps mlserver-venv
	$(PY) loadtests/bench.py --quick $(BENCH_ARGS)

## Where a request's time goes: py-spy over our gunicorn workers while wrk loads them.
profile: install load-deps
	@test -x $(BENCH_DIR)/tools-venv/bin/py-spy || { \
	  $(PYTHON) -m venv $(BENCH_DIR)/tools-venv && \
	  $(BENCH_DIR)/tools-venv/bin/pip install -q py-spy==0.4.3; }
	$(PY) loadtests/profile_service.py --py-spy $(BENCH_DIR)/tools-venv/bin/py-spy $(PROFILE_ARGS)
