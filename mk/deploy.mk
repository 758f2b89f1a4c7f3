# Containers and Kubernetes: Dockerfile, docker-compose.yml, k8s/ (docs/deploy.md).
#
#   make image            docker build the api image (IMAGE=predictor-api:latest)
#   make deploy-check     hadolint, compose config, kustomize + strict schema validation, cross-checks
#   make compose-local    the compose stack on podman with local stand-in images (no registry)
#   make compose-local-down
#   make k8s-render OVERLAY=prod   print the rendered manifests (stderr: placeholders left)
#
# Variables: IMAGE, OVERLAY (dev|prod|s3), PREDICTOR_HTTP_PORT / PROMETHEUS_PORT for compose-local.

IMAGE ?= predictor-api:latest
OVERLAY ?= dev
DOCKER ?= docker

.PHONY: image deploy-check deploy-test compose-local compose-local-down compose-local-logs k8s-render

$(VENV)/.deploy-installed: deps/pip-deploy.txt | $(VENV)/.installed
	$(PY) -m pip install -q -r deps/pip-deploy.txt
	touch $@

## Build the api image with a real Docker engine (BASE_IMAGE and PIP_INDEX_URL pass through).
image:
	$(DOCKER) build -t $(IMAGE) \
	  $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
	  $(if $(PIP_INDEX_URL),--build-arg PIP_INDEX_URL=$(PIP_INDEX_URL)) .

## Offline checks of every deployment file (no containers, no cluster), ~15 s.
deploy-check: $(VENV)/.deploy-installed
	$(VENV)/bin/hadolint --failure-threshold warning Dockerfile
	$(VENV)/bin/pytest -q tests/deploy/test_deploy_config.py tests/deploy/test_deploy_k8s.py tests/deploy/test_deploy_k8s_overlays.py tests/deploy/test_deploy_kserve.py

## The offline checks plus the real compose run on podman (a few minutes).
deploy-test: install-test
	$(VENV)/bin/pytest -q tests/deploy/test_deploy_config.py tests/deploy/test_deploy_k8s.py tests/deploy/test_deploy_k8s_overlays.py tests/deploy/test_deploy_kserve.py tests/deploy/test_deploy_compose.py

## docker compose up on this machine: podman API, debootstrapped base, stand-in images.
compose-local: $(VENV)/.deploy-installed
	PYTHON=$(abspath $(PY)) compose/local-stack.sh up

compose-local-logs:
	PYTHON=$(abspath $(PY)) compose/local-stack.sh logs

## Stop it: down -v, then the podman service and the healthcheck ticker (by PID).
compose-local-down:
	PYTHON=$(abspath $(PY)) compose/local-stack.sh down

## Rendered manifests on stdout; a warning on stderr while site values are placeholders.
k8s-render: $(VENV)/.deploy-installed
	@$(PY) -m tools.k8s_render --kubectl $(VENV)/bin/kubectl k8s/overlays/$(OVERLAY)
