#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine: the Debian packages
# listed in deps/apt-*.txt, the pinned Python packages in deps/pip-*.txt (and
# the project's [test] extra), and any npm tools in deps/npm-*.txt. Idempotent:
# a second run installs nothing. Never skips silently: a failed install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

mapfile -t apt_pkgs < <(cat deps/apt-*.txt 2>/dev/null | sed 's/#.*//' | xargs -n1 2>/dev/null | sort -u)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

pip_args=(-e ".[test]" -c deps/constraints.txt)
for f in deps/pip-*.txt; do [ -f "$f" ] && pip_args+=(-r "$f"); done
"$VENV/bin/python" -m pip install -q "${pip_args[@]}"

for f in deps/npm-*.sh; do [ -f "$f" ] && bash "$f"; done
echo "test dependencies ready"
