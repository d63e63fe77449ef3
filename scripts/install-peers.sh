#!/usr/bin/env bash
# Installs the systems the benchmark compares Switchboard with, from the
# distribution's packages (Debian). Idempotent; needs root (or sudo).
#   nats-server   NATS core request/reply and pub/sub, JetStream
#   dbus-daemon   the reference D-Bus message bus
#   rabbitmq-server  durable queue with publisher confirms (Erlang; starts in
#                 seconds; the bench runs the broker and its own epmd on private
#                 ports and skips RabbitMQ, saying so, if it does not start)
#   libzmq        ZeroMQ is linked into the benchmark (libzmq3-dev, installed by
#                 scripts/install-test-deps.sh because the workspace build needs it)
# Not here: dbus-broker. Its launcher (dbus-broker-launch 33) exits with
# ENOMEDIUM when no systemd manager runs, even given a socket by
# systemd-socket-activate, a journal socket and a session bus address — so it
# cannot run in a container without systemd as PID 1.
set -euo pipefail
. "$(dirname "$0")/apt-install.sh"

need=()
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus-daemon)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
if [ ${#need[@]} -eq 0 ]; then
  echo "peers already installed"
  exit 0
fi
apt_install "${need[@]}"
