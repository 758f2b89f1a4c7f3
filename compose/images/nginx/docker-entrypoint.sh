#!/bin/sh
# As in the official image: when the command is nginx, run the hooks in
# /docker-entrypoint.d first (template rendering), then exec the command.
set -e
if [ "$1" = "nginx" ] || [ "$1" = "nginx-debug" ]; then
  for f in /docker-entrypoint.d/*.sh; do
    [ -x "$f" ] && echo "$0: running $f" && "$f"
  done
fi
exec "$@"
