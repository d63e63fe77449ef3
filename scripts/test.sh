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

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests (unit, property, end-to-end against the real daemon binary)"
cargo test --workspace --locked

step "benchmark smoke run (--quick: every case runs and yields numbers; no speed asserted)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cargo run --locked -p switchboard-bench -- all --quick --out "$out/bench.json"
