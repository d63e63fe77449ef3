#!/usr/bin/env bash
# Installs what the end-to-end tests run besides Switchboard itself, from
# the distribution's packages (Debian). Idempotent; needs root (or sudo).
#   systemd-notify   the supervisor tests run services that report readiness
#                    with the distribution's own systemd-notify (package systemd)
#   openssl          the TLS tests make a CA and certificates with it
#   useradd          the security tests run the CLI as a second OS user (package passwd)
#   libzmq3-dev      the benchmark links libzmq (the ZeroMQ peer) and is built with
#   pkg-config       the workspace, so it is needed to compile at all
set -euo pipefail
. "$(dirname "$0")/apt-install.sh"

need=()
command -v systemd-notify >/dev/null 2>&1 || need+=(systemd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v useradd >/dev/null 2>&1 || need+=(passwd)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists libzmq 2>/dev/null || need+=(libzmq3-dev)
if [ ${#need[@]} -eq 0 ]; then
  echo "test dependencies already installed"
  exit 0
fi
apt_install "${need[@]}"
command -v systemd-notify >/dev/null && command -v openssl >/dev/null
