#!/usr/bin/env bash
# Go builds the control plane (devcluster/go: kube-apiserver, etcd, kwok, kubectl, ...)
# and the extender-pair benchmark's client and no-op (bench/go, tests marked `go`). Fail
# loudly when `go` is missing or older than the newest `go` directive of those go.mod
# files (or of the one go.mod given): devcluster/build.sh runs with GOTOOLCHAIN=local, so
# an older Go would only fail later, inside the build.
# The Makefile puts $GO_BIN (default /usr/local/go/bin) first on PATH.
set -euo pipefail
root="$(dirname "$0")/.."
if [ $# -gt 0 ]; then
    mods=("$1")
else
    mods=("$root"/bench/go/go.mod "$root"/devcluster/go/*/go.mod)
fi
want=$(awk '$1 == "go" { print $2; nextfile }' "${mods[@]}" | sort -V | tail -n1)
[ -n "$want" ] || { echo "go-check: no go directive in ${mods[*]}" >&2; exit 1; }
if [ ${#mods[@]} -eq 1 ]; then mod="${mods[0]}"; else mod="devcluster/go/*/go.mod"; fi
if ! command -v go >/dev/null; then
    echo "go-check: Go >= $want is needed (the control plane's build, bench/go, tests marked go) but \`go\` is not on PATH." >&2
    echo "  Install it (e.g. the official tarball unpacked to /usr/local/go) or run" >&2
    echo "  \`make test GO_BIN=/path/to/go/bin\`." >&2
    exit 1
fi
have=$(go env GOVERSION)   # go1.26.8 (or go1.22rc1, devel ...)
have=${have#go}
# Compare major.minor[.patch] numerically: sort -V puts the older first.
if [ "$(printf '%s\n%s\n' "$want" "${have%%[!0-9.]*}" | sort -V | head -n1)" != "$want" ]; then
    echo "go-check: Go $have at $(command -v go) is older than the $want that $mod needs." >&2
    echo "  Install a newer Go or point GO_BIN at one." >&2
    exit 1
fi
