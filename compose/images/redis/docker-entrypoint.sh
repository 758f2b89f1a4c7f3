#!/bin/sh
# As in the official image: flags alone mean redis-server flags. Without a
# config file Debian's redis-server starts in protected mode (refusing other
# containers); the official image compiles protected mode off, so do the same
# from the command line.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi
if [ "$1" = "redis-server" ]; then
  shift
  set -- redis-server "$@" --protected-mode no
fi
exec "$@"
