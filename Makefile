# Predictor: the commands README names. Area-specific targets live in mk/*.mk.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STORE ?= models
export PREDICTOR_MODEL_STORE ?= $(STORE)

.PHONY: run test test-fast lint install install-test models

$(VENV)/.installed: pyproject.toml deps/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e . -c deps/constraints.txt
	touch $@

install: $(VENV)/.installed

## The local signing key (created once, outside the repo); the demo models, trained into
## the store when it has none or its current versions do not verify with that key.
models: install
	@$(VENV)/bin/predictor signing-key init
	@if test -z "$$(ls -A $(STORE) 2>/dev/null)" || ! $(VENV)/bin/predictor verify --store $(STORE) >/dev/null; then \
		$(VENV)/bin/predictor train-demo --store $(STORE); fi

## Serve on http://127.0.0.1:8000 with gunicorn and the in-process cache.
run: models
	$(VENV)/bin/predictor serve

## Install everything the tests need (Debian packages, Python, npm), then run them all.
install-test: install
	bash scripts/install-test-deps.sh

test: install-test
	$(VENV)/bin/pytest

# The test dependencies, reinstalled only when their lists change (test-fast's inner loop).
$(VENV)/.test-installed: pyproject.toml $(wildcard deps/*) scripts/install-test-deps.sh | $(VENV)/.installed
	bash scripts/install-test-deps.sh
	touch $@

## The inner loop: tests/unit and tests/app only (no servers), 68-79 s on 2 quiet cores.
# One pytest process per core (pytest-xdist): no test here shares a port, a file or a server.
# The fuzzing and load plugins (schemathesis, hypothesis, anyio, locust) serve only
# tests/stack and tests/deploy; loading them costs each process ~4 s (pytest rewrites
# their ~270 modules' asserts), so the inner loop leaves them out.
FAST_PLUGINS_OFF := -p no:schemathesis -p no:hypothesispytest -p no:anyio -p no:locust
test-fast: $(VENV)/.test-installed
	$(VENV)/bin/pytest -q -n auto --dist worksteal $(FAST_PLUGINS_OFF) -m "unit or app" tests/unit tests/app

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

-include mk/*.mk
