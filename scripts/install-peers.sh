#!/usr/bin/env bash
# Installs the systems the benchmark compares Switchboard with, from the
# distribution's packages (Debian). Idempotent; needs root (or sudo).
#   nats-server   NATS core request/reply and pub/sub, JetStream
#   dbus-daemon   the reference D-Bus message bus
set -euo pipefail

need=()
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus-daemon)
if [ ${#need[@]} -eq 0 ]; then
  echo "peers already installed"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
