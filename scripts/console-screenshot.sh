#!/usr/bin/env bash
# Takes a screenshot of the web console: starts a throwaway daemon running
# the demo services with the gateway on a free loopback port, lets the shop
# place some orders, and has Debian's chromium (headless, through
# chromedriver) load the console and save it as docs/console.png (or the
# path given). Needs chromium and chromium-driver (scripts/install-test-deps.sh
# installs them), curl and python3.
#
#   bash scripts/console-screenshot.sh [OUT.png]
#
# BIN_DIR=target/debug uses a debug build instead of building a release one.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/console.png}"
bin="${BIN_DIR:-target/release}"
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release -q -p switchboard-cli -p switchboard-examples
fi
command -v chromium >/dev/null || { echo "chromium is needed: apt-get install chromium" >&2; exit 1; }
command -v chromedriver >/dev/null || { echo "chromedriver is needed: apt-get install chromium-driver" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Waits (at most 10 s) until URL answers.
wait_for() {
  for _ in $(seq 100); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$1 never answered" >&2
  return 1
}
work="$(mktemp -d)"
port="$(free_port)"
"$bin/switchboard" up --demo --gateway "127.0.0.1:$port" --listen "unix:$work/bus.sock" \
  --data-dir "$work/data" >"$work/daemon.log" 2>&1 &
daemon=$!
trap 'kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; rm -rf "$work"' EXIT
wait_for "http://127.0.0.1:$port/readyz"
export SWITCHBOARD_ADDR="unix:$work/bus.sock"
sleep 2 # the demo services start in order
"$bin/switchboard" start shop >/dev/null || true
driver_port="$(free_port)"
chromedriver --port="$driver_port" >"$work/driver.log" 2>&1 &
driver=$!
trap 'kill "$driver" "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; rm -rf "$work"' EXIT
wait_for "http://127.0.0.1:$driver_port/status"
sandbox=""
[ "$(id -u)" = 0 ] && sandbox='"--no-sandbox",'
wd="http://127.0.0.1:$driver_port/session"
session="$(curl -sf -XPOST "$wd" -H 'Content-Type: application/json' -d "{\"capabilities\":{\"alwaysMatch\":{\"goog:chromeOptions\":{\"binary\":\"/usr/bin/chromium\",\"args\":[\"--headless=new\",$sandbox\"--hide-scrollbars\",\"--window-size=1280,1000\",\"--user-data-dir=$work/profile\"]}}}}" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["value"]["sessionId"])')"
curl -sf -XPOST "$wd/$session/url" -H 'Content-Type: application/json' -d "{\"url\":\"http://127.0.0.1:$port/\"}" >/dev/null
sleep 4 # a few refreshes, so the rates have values
curl -sf "$wd/$session/screenshot" | python3 -c 'import base64, json, sys; open(sys.argv[1], "wb").write(base64.b64decode(json.load(sys.stdin)["value"]))' "$out"
curl -sf -XDELETE "$wd/$session" >/dev/null || true
echo "saved $out"
