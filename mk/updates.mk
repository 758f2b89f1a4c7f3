# Zero-downtime model updates under load (tools/load_scenarios.py, docs/zero-downtime.md).
#
#   make zero-downtime    every scenario, 50 Locust users, 60 s of load each; prints the
#                         markdown table and writes it to $(ZD_TABLE); fails on any failure
#   make rehearsal        only the rolling-update rehearsal (two pods behind nginx)
#
# Variables: ZD_USERS (50), ZD_SECONDS (60), ZD_ARGS (e.g. ZD_ARGS="--only promotion,sigterm"
# or "--run-dir run/zd" to keep every log). `make test` runs the short form
# (tests/deploy/test_zero_downtime.py, ~10 s per scenario).

ZD_USERS ?= 50
ZD_SECONDS ?= 60
ZD_ARGS ?=
ZD_TABLE ?= loadtests/results/zero-downtime.md

.PHONY: zero-downtime rehearsal

zero-downtime: install-test
	@mkdir -p $(dir $(ZD_TABLE))
	$(PY) -m tools.load_scenarios --users $(ZD_USERS) --seconds $(ZD_SECONDS) \
	  --table-file $(ZD_TABLE) $(ZD_ARGS)

rehearsal: install-test
	$(PY) -m tools.rehearsal --users $(ZD_USERS) --seconds $(ZD_SECONDS) $(ZD_ARGS)
