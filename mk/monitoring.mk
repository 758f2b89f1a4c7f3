# Monitoring: Prometheus config and rules, Grafana dashboards (monitoring/).

PROMTOOL ?= promtool

.PHONY: monitoring-check monitoring-dashboards monitoring-test

## promtool: check every config and rule file, run the rule unit tests, check the dashboards are built.
monitoring-check: install
	cd monitoring && $(PROMTOOL) check config prometheus.yml
	cd monitoring && $(PROMTOOL) check config prometheus-local.yml
	cd monitoring && $(PROMTOOL) check rules rules/*.yml
	cd monitoring && $(PROMTOOL) test rules tests/*.yml
	$(PY) monitoring/grafana/build_dashboards.py --check

## Rebuild monitoring/grafana/dashboards/*.json from monitoring/grafana/build_dashboards.py.
monitoring-dashboards: install
	$(PY) monitoring/grafana/build_dashboards.py

## Every monitoring test: the checks above, Grafana's schema, and the live Prometheus run.
monitoring-test: install-test
	$(VENV)/bin/pytest -q tests/deploy/test_monitoring_rules.py tests/deploy/test_monitoring_dashboards.py tests/deploy/test_monitoring_live.py
