#!/usr/bin/env bash
# Install the Debian packages the tests and the demo run for real: Prometheus,
# dbus-daemon (the fake BlueZ's private bus) and openssl (throwaway certificates
# for the webhook's mutual TLS), and python3-venv when the Python that makes .venv
# has no ensurepip (Debian's python3 without that package). Skips apt when all are present.
# `system-deps.sh venv`: python3-venv alone (the Makefile's venv step, only when a venv
# is to be made).
set -euo pipefail
need=()
if [ "${1:-}" != venv ]; then
    command -v prometheus >/dev/null || need+=(prometheus)
    command -v dbus-daemon >/dev/null || need+=(dbus-daemon)
    command -v openssl >/dev/null || need+=(openssl)
fi
"${PYTHON:-python3}" -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
        echo "system-deps: need root to install: ${need[*]} (no sudo here); run as root:" >&2
        echo "  apt-get install -y --no-install-recommends ${need[*]}" >&2
        exit 1
    }
    SUDO=sudo
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
