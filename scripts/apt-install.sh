#!/usr/bin/env bash
# Sourced by the install scripts: apt_install PACKAGE... installs Debian
# packages (with sudo unless root), quietly and without recommends.
apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}
