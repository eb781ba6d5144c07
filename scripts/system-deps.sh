#!/usr/bin/env bash
# Install the Debian packages the tests and the demo run for real: Prometheus and
# dbus-daemon (the fake BlueZ's private bus). Skips apt when they are present.
set -euo pipefail
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v dbus-daemon >/dev/null || need+=(dbus-daemon)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
