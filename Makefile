# Predictor: the commands README names. Area-specific targets live in mk/*.mk.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STORE ?= models
export PREDICTOR_MODEL_STORE ?= $(STORE)

.PHONY: run test test-fast lint install install-test models

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

install: $(VENV)/.installed

## Train the demo models into the store when it has none.
models: install
	@test -n "$$(ls -A $(STORE) 2>/dev/null)" || $(VENV)/bin/predictor train-demo --store $(STORE)

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

## The inner loop: tests/unit and tests/app only (no servers), well under 90 s.
test-fast: $(VENV)/.test-installed
	$(VENV)/bin/pytest -q -m "unit or app" tests/unit tests/app

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

-include mk/*.mk
