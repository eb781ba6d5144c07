#!/usr/bin/env bash
# Go builds the extender-pair benchmark's client and no-op (bench/go), which tests
# marked `go` run. Fail loudly when `go` is missing or older than bench/go/go.mod
# asks for: a test run without it must not quietly lose those tests.
# The Makefile puts $GO_BIN (default /usr/local/go/bin) first on PATH.
set -euo pipefail
mod="${1:-$(dirname "$0")/../bench/go/go.mod}"
want=$(awk '$1 == "go" { print $2; exit }' "$mod")
[ -n "$want" ] || { echo "go-check: no go directive in $mod" >&2; exit 1; }
if ! command -v go >/dev/null; then
    echo "go-check: Go >= $want is needed (bench/go, tests marked go) but \`go\` is not on PATH." >&2
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
