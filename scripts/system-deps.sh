#!/usr/bin/env bash
# Install the Debian packages the tests and the demo run for real: Prometheus,
# dbus-daemon (the fake BlueZ's private bus) and openssl (throwaway certificates
# for the webhook's mutual TLS). Skips apt when they are present.
set -euo pipefail
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v dbus-daemon >/dev/null || need+=(dbus-daemon)
command -v openssl >/dev/null || need+=(openssl)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
