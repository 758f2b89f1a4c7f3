# The native local stack: redis-server, gunicorn and nginx (and Prometheus when
# monitoring/prometheus-local.yml exists) on loopback, every pid file and log under
# $(RUN_DIR). docs/stack.md says more. Other ports: make stack STACK_ARGS="--port 9080".
RUN_DIR ?= run
STACK_ARGS ?=
# Debian keeps nginx in /usr/sbin, which a non-root PATH may lack.
STACK_PATH := $(PATH):/usr/local/sbin:/usr/sbin:/sbin
STACK_BINARIES := nginx redis-server \
  $(if $(wildcard monitoring/prometheus-local.yml monitoring/prometheus.local.yml),prometheus)

.PHONY: stack stack-down stack-status stack-deps

## Install the stack's Debian packages when missing (scripts/install-test-deps.sh).
stack-deps:
	@missing=""; for b in $(STACK_BINARIES); do \
	  PATH="$(STACK_PATH)" command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "stack: missing$$missing; installing with scripts/install-test-deps.sh"; \
	  bash scripts/install-test-deps.sh || { \
	    echo "stack: could not install$$missing: install the Debian packages of those names (apt-get install -y$$missing)" >&2; exit 1; }; \
	  for b in $$missing; do PATH="$(STACK_PATH)" command -v $$b >/dev/null || { \
	    echo "stack: $$b still missing after the install: apt-get install -y $$b" >&2; exit 1; }; done; \
	fi

# The stack demonstrates the shared cache: every model's answers go through Redis, so a
# repeat hits whichever worker takes it (the service default keeps models faster than a
# Redis round trip in each worker's own LRU; see README, Cache).
stack: export PREDICTOR_CACHE_SHARED_MIN_US ?= 0

## Start the stack; nginx answers on http://127.0.0.1:8080.
stack: install stack-deps
	$(PY) -m tools.stack up --run-dir $(RUN_DIR) $(STACK_ARGS)

## Stop every process of the stack by the PIDs in $(RUN_DIR)/*.pid.
stack-down: install
	$(PY) -m tools.stack down --run-dir $(RUN_DIR)

stack-status: install
	$(PY) -m tools.stack status --run-dir $(RUN_DIR)
