#!/usr/bin/env bash
# The Python client's checks (scripts/test.sh runs them after the Rust build):
# lint, format, types (strict, for Python 3.9 and the tests on this Python),
# the pytest suite against the real daemon binary (target/debug), and a wheel.
# Needs scripts/python-env.sh first.
set -euo pipefail
cd "$(dirname "$0")/../clients/python"
venv=../../target/py-venv/bin
"$venv/ruff" check .
"$venv/ruff" format --check .
"$venv/mypy" --strict --python-version 3.9 src
"$venv/mypy" --strict --python-version "$("$venv/python" -c "import sys; print(f\"{sys.version_info[0]}.{sys.version_info[1]}\")")" tests bench
SWITCHBOARD_BIN_DIR="$(cd ../../target/debug && pwd)" "$venv/python" -m pytest -q -p no:cacheprovider tests
dist=../../target/py-dist
rm -rf "$dist" && mkdir -p "$dist"
"$venv/python" -m pip wheel -q --no-deps -w "$dist" .
wheel="$(ls "$dist"/switchboard_bus-*.whl)"
"$venv/python" - "$wheel" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
for needed in ("switchboard/__init__.py", "switchboard/py.typed", "switchboard/sync.py"):
    assert needed in names, f"{needed} is missing from the wheel"
print("wheel:", sys.argv[1], len(names), "files")
PY
