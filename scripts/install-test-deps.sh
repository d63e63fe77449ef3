#!/usr/bin/env bash
# Installs what the end-to-end tests run besides Switchboard itself, from
# the distribution's packages (Debian). Idempotent; needs root (or sudo).
#   systemd-notify   the supervisor tests run services that report readiness
#                    with the distribution's own systemd-notify (package systemd)
#   openssl          the TLS tests make a CA and certificates with it
#   curl             the HTTPS gateway test reaches it as an operator would
#   nats-server      the fleet tests run a real three-server NATS cluster (Debian's 2.9)
#   ip (iproute2)    the fleet tests put each host in its own network namespace
#   useradd          the security tests run the CLI as a second OS user (package passwd)
#   libzmq3-dev      the benchmark links libzmq (the ZeroMQ peer) and is built with
#   pkg-config       the workspace, so it is needed to compile at all
#   strace           the queue fault tests inject EIO into the daemon's fdatasync
#   unshare, nsenter the queue fault tests fill a private tmpfs (package util-linux;
#   mount            mount is its own package)
#   libnss-extrausers the security tests resolve a user that only NSS knows
#   man-db           the man page test renders every generated page with `man -l`
#   tmux             the `switchboard top` test runs it in a pseudo-terminal and reads the screen
#   chromium,        the web console test drives Debian's browser, headless, through
#   chromium-driver  chromedriver (no package that downloads a browser of its own)
set -euo pipefail
. "$(dirname "$0")/apt-install.sh"

need=()
command -v systemd-notify >/dev/null 2>&1 || need+=(systemd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v useradd >/dev/null 2>&1 || need+=(passwd)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists libzmq 2>/dev/null || need+=(libzmq3-dev)
command -v strace >/dev/null 2>&1 || need+=(strace)
{ command -v unshare && command -v nsenter; } >/dev/null 2>&1 || need+=(util-linux)
command -v mount >/dev/null 2>&1 || need+=(mount)
dpkg -s libnss-extrausers >/dev/null 2>&1 || need+=(libnss-extrausers)
command -v man >/dev/null 2>&1 || need+=(man-db)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -eq 0 ]; then
  echo "test dependencies already installed"
  exit 0
fi
apt_install "${need[@]}"
command -v systemd-notify >/dev/null && command -v openssl >/dev/null && command -v curl >/dev/null \
  && command -v nats-server >/dev/null && command -v ip >/dev/null \
  && command -v strace >/dev/null \
  && command -v unshare >/dev/null && command -v nsenter >/dev/null && command -v mount >/dev/null \
  && command -v man >/dev/null && command -v tmux >/dev/null \
  && command -v chromium >/dev/null && command -v chromedriver >/dev/null
