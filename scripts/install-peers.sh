#!/usr/bin/env bash
# Installs the systems the benchmark compares Switchboard with, from the
# distribution's packages (Debian). Idempotent; needs root (or sudo).
#   nats-server   NATS core request/reply and pub/sub, JetStream
#   dbus-daemon   the reference D-Bus message bus
#   dbus-broker   the faster D-Bus broker; the bench starts its launcher through
#                 systemd-socket-activate (package systemd), with dbus-daemon as
#                 the bus it watches for systemd, and binds a sink at the
#                 journal's socket for the run when no journald listens there
#   rabbitmq-server  durable queue with publisher confirms (Erlang; starts in
#                 seconds; the bench runs the broker and its own epmd on private
#                 ports and skips RabbitMQ, saying so, if it does not start)
#   libzmq        ZeroMQ is linked into the benchmark (libzmq3-dev, installed by
#                 scripts/install-test-deps.sh because the workspace build needs it)
set -euo pipefail
. "$(dirname "$0")/apt-install.sh"

need=()
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus-daemon)
command -v dbus-broker-launch >/dev/null 2>&1 || need+=(dbus-broker)
command -v systemd-socket-activate >/dev/null 2>&1 || need+=(systemd)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
if [ ${#need[@]} -eq 0 ]; then
  echo "peers already installed"
  exit 0
fi
apt_install "${need[@]}"
