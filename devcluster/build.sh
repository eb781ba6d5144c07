#!/usr/bin/env bash
# Build the devcluster's control-plane binaries from the Go module proxy into a
# cache folder outside the repo, keyed by the pinned versions (the go.sum files).
# Idempotent: a complete cache folder is reused without calling the Go toolchain.
# Prints the folder on its last line; `build.sh --print-dir` prints it without
# building (the Python launcher uses this, so the cache key lives in one place).
# kubectl (tests/install) is built from k8s.io/kubectl at the apiserver's version into a
# folder of its own, keyed by its own module: `--print-kubectl-dir` prints it.
# cert-manager's controllers and cainjector (tests/install, the cert-manager overlay) are
# built from github.com/cert-manager/cert-manager's module into one binary, keyed the same
# way: `--print-cert-manager-dir` prints its folder, `--cert-manager-crds` the CRD folder
# the module ships (deploy/crds).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export GOTOOLCHAIN=local CGO_ENABLED=0
cache="${CLOUD4IOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cloud4iot}/bin"
# The control plane's key: its three modules only (kubectl's module does not change it).
key=$(cd "$here/go" && cat etcd/go.mod k8s/go.mod kwok/go.mod etcd/go.sum k8s/go.sum kwok/go.sum \
  | sha256sum | cut -c1-12)
out="$cache/k8s-v1.36.3-etcd-v3.6.16-kwok-v0.8.0-$key"
kkey=$(cat "$here"/go/kubectl/go.mod "$here"/go/kubectl/go.sum | sha256sum | cut -c1-12)
kout="$cache/kubectl-v1.36.3-$kkey"
ckey=$(cat "$here"/go/certmanager/go.mod "$here"/go/certmanager/go.sum "$here"/go/certmanager/cmd/cert-manager/main.go \
  | sha256sum | cut -c1-12)
cmver=$(cd "$here/go/certmanager" && awk '$1 == "github.com/cert-manager/cert-manager" {print $2}' go.mod)
cout="$cache/cert-manager-$cmver-$ckey"
[ "${1:-}" = --print-dir ] && { echo "$out"; exit 0; }
[ "${1:-}" = --print-cert-manager-dir ] && { echo "$cout"; exit 0; }
if [ "${1:-}" = --cert-manager-crds ]; then
  (cd "$here/go/certmanager" && go mod download -json "github.com/cert-manager/cert-manager@$cmver" \
    | awk -F'"' '$2 == "Dir" {print $4 "/deploy/crds"}')
  exit 0
fi
[ "${1:-}" = --print-kubectl-dir ] && { echo "$kout"; exit 0; }
if [ ! -x "$kout/kubectl" ]; then
  mkdir -p "$kout.tmp"
  kstart=$(date +%s)
  (cd "$here/go/kubectl" && go build -trimpath -ldflags "-s -w \
    -X k8s.io/client-go/pkg/version.gitVersion=v1.36.3 \
    -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=36 \
    -X k8s.io/component-base/version.gitVersion=v1.36.3 \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36" \
    -o "$kout.tmp/" ./cmd/kubectl)
  rm -rf "$kout" && mv "$kout.tmp" "$kout"
  echo "kubectl built in $(( $(date +%s) - kstart ))s" >&2
fi
if [ ! -x "$cout/cert-manager" ]; then
  mkdir -p "$cout.tmp"
  cstart=$(date +%s)
  (cd "$here/go/certmanager" && go build -trimpath -ldflags "-s -w" -o "$cout.tmp/" ./cmd/cert-manager)
  rm -rf "$cout" && mv "$cout.tmp" "$cout"
  echo "cert-manager $cmver built in $(( $(date +%s) - cstart ))s" >&2
fi
bins=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok kwokctl)
missing=0
for b in "${bins[@]}"; do [ -x "$out/$b" ] || missing=1; done
if [ "$missing" = 0 ]; then echo "devcluster binaries up to date" >&2; echo "$out"; exit 0; fi
mkdir -p "$out.tmp"
start=$(date +%s)
# -trimpath keeps paths of this machine out of the binaries; one go build per
# module so shared packages compile once.
(cd "$here/go/etcd" && go build -trimpath -o "$out.tmp/" ./cmd/etcd)
(cd "$here/go/kwok" && go build -trimpath -o "$out.tmp/" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl)
(cd "$here/go/k8s" && go build -trimpath -ldflags "-s -w \
  -X k8s.io/component-base/version.gitVersion=v1.36.3 \
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36" \
  -o "$out.tmp/" ./cmd/kube-apiserver ./cmd/kube-controller-manager ./cmd/kube-scheduler)
rm -rf "$out" && mv "$out.tmp" "$out"
echo "devcluster binaries built in $(( $(date +%s) - start ))s" >&2
echo "$out"
