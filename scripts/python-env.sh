#!/usr/bin/env bash
# Makes the Python client's virtualenv, target/py-venv: the client itself
# (pip install ./clients/python, as a user installs it), its development tools
# (pytest, mypy, ruff, build) and, best effort, the benchmark's Python peers
# (nats-py, dbus-fast; a missing one is skipped by the bench and says so).
# Installs Debian's python3-venv first (required: a fresh Debian python3 cannot
# make a virtualenv without it). Idempotent; re-run it after changing the client.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt-install.sh

python="${PYTHON:-python3}"
if ! dpkg -s python3-venv >/dev/null 2>&1; then
  apt_install python3-venv
fi
venv=target/py-venv
if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps ./clients/python
"$venv/bin/python" -m pip install -q "./clients/python[dev]"
"$venv/bin/python" -m pip install -q nats-py dbus-fast \
  || echo "warning: could not install nats-py and dbus-fast: the bench skips the Python peers"
"$venv/bin/python" -c 'import switchboard, sys; print("python client", switchboard.__version__, "in", sys.prefix)'
