#!/usr/bin/env bash
# The test command (README "Run the tests"; .ci/run calls exactly this).
# Sets up what it needs on a fresh Debian machine with a Rust toolchain, then
# checks formatting and lints, runs every test, and smoke-runs the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain components"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

step "build and test dependencies (libzmq for the benchmark; systemd-notify, openssl, curl, nats-server, iproute2, useradd, strace, unshare/nsenter, libnss-extrausers, tmux, chromium and chromium-driver for the tests)"
bash scripts/install-test-deps.sh

step "Python client's virtualenv (python3-venv, pip install ./clients/python, pytest, mypy, ruff)"
bash scripts/python-env.sh

step "format"
cargo fmt --all -- --check

step "lint (clippy; too_many_lines at 80, see clippy.toml)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "size (no source file over 500 lines outside its tests)"
bash scripts/check-size.sh

step "layering (the daemon never depends on the client; ARCHITECTURE.md)"
if cargo tree --locked -p switchboard-daemon --prefix none | grep -q '^switchboard v'; then
  echo "switchboard-daemon depends on the client crate (switchboard): hosted apps live in their own crates" >&2
  exit 1
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

step "tests (unit, property, end-to-end against the real daemon binary)"
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$out/test.log"

step "tests that need root (a second user, mount namespaces, strace): named …_as_root, ignored by a plain cargo test"
if [ "$(id -u)" = 0 ]; then
  cargo test --workspace --locked --no-fail-fast -- --ignored _as_root 2>&1 | tee "$out/root.log"
  ran="$(awk '/^test result:/ { p += $4 } END { print p + 0 }' "$out/root.log")"
  if [ "$ran" -lt 8 ]; then
    echo "only $ran of the tests that need root ran (expected 8)" >&2
    exit 1
  fi
  cat "$out/root.log" >> "$out/test.log"
elif [ "${CI:-}" = true ]; then
  echo "CI runs as root: the tests that need root would be skipped here, which CI must never do" >&2
  exit 1
else
  echo "not root: the tests named …_as_root are skipped (listed as ignored above); run this as root to include them"
fi

step "Python client: ruff, mypy --strict (Python 3.9), pytest against the real daemon, wheel"
cargo build --workspace --bins --locked
bash scripts/test-python.sh 2>&1 | tee "$out/python.log"

step "Debian package (a pinned cargo-deb; the debug binary, to spare a release build; contents checked)"
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb 3.8.0" ]; then
  cargo install --locked --version 3.8.0 cargo-deb
fi
PROFILE=dev bash scripts/deb.sh
bash scripts/check-deb.sh

step "peers for the benchmark (best effort: a peer that cannot be installed is skipped, and says so)"
bash scripts/install-peers.sh || echo "warning: could not install the benchmark's peers"

step "benchmark smoke run (--quick: every case runs and yields numbers; no speed asserted)"
cargo run --locked -p switchboard-bench -- all --quick --out "$out/bench.json"
cargo run --locked -p switchboard-bench -- gateway --count 200 --repeats 1
cargo run --locked -p switchboard-bench -- fleet --count 200 --repeats 1
cargo run --locked -p switchboard-bench -- blobs --quick --repeats 1
cargo run --locked -p switchboard-bench -- blob-fanout --quick --repeats 1

# One total for the whole run (cargo prints a line per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "\nRust tests: %d passed, %d failed\n", p, f }' "$out/test.log"
grep -E '^[0-9]+ passed' "$out/python.log" | sed 's/^/Python tests: /' || true
