# Fault, abuse and access-control suite (issue 8); docs/security.md says more.
#   make chaos        every fault under Locust load, one markdown row each (~5 minutes)
#   make chaos-short  the short form tests/deploy/test_chaos.py runs (~1.5 minutes)
#   make audit        pip-audit on the pinned dependency set (needs PyPI's JSON API or OSV)
CHAOS_ARGS ?=
AUDIT_DIR ?= run
AUDIT_VENV = $(AUDIT_DIR)/audit-venv
AUDIT_REQS = $(AUDIT_DIR)/audit-requirements.txt
# Debian keeps nginx in /usr/sbin, which a non-root PATH may lack.
CHAOS_PATH := $(PATH):/usr/local/sbin:/usr/sbin:/sbin

.PHONY: chaos chaos-short audit

## Every fault against redis + 2 gunicorn + nginx under Locust load; prints the table.
chaos: install-test
	PATH="$(CHAOS_PATH)" $(PY) -m tools.chaos $(CHAOS_ARGS)

chaos-short: install-test
	PATH="$(CHAOS_PATH)" $(PY) -m tools.chaos --short $(CHAOS_ARGS)

## pip-audit (in its own venv: its dependencies never touch the pinned one) on every pin of
## pyproject.toml and deps/pip-*.txt. --strict: a package it cannot look up fails the run.
audit:
	@mkdir -p $(AUDIT_DIR)
	test -x $(AUDIT_VENV)/bin/pip-audit || { $(PYTHON) -m venv $(AUDIT_VENV) && \
	  $(AUDIT_VENV)/bin/pip install -q -r deps/audit-chaos.txt; }
	$(PYTHON) -c 'import glob, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	  pins = p["dependencies"] + [d for ds in p["optional-dependencies"].values() for d in ds]; \
	  pins += [l.split("#")[0].strip() for f in sorted(glob.glob("deps/pip-*.txt")) for l in open(f)]; \
	  print("\n".join(x for x in pins if x))' > $(AUDIT_REQS)
	$(AUDIT_VENV)/bin/pip-audit --strict --no-deps --progress-spinner off -r $(AUDIT_REQS)
