#!/usr/bin/env bash
# Builds the quantity oracle (main.go over k8s.io/apimachinery's resource.ParseQuantity) into a
# cache outside the repo, keyed by the apimachinery version and this module's sources; prints
# the bin directory. Reuses the cache when it is there; builds it when it is missing (seconds:
# the module cache of hack/controlplane/build.sh already holds apimachinery).
#   build.sh          build if needed, print the bin directory
#   build.sh --check  print the bin directory if it is built, else exit 1 (never builds)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
apimachinery=$(sed -n 's/^require k8s.io\/apimachinery \(v[^ ]*\)$/\1/p' go.mod | head -1)
# Bump recipe when the way the binary is built changes (flags).
recipe=1
key=$( (cat go.mod go.sum main.go; echo "recipe=$recipe") | sha256sum | cut -c1-12)
cache=${KUBEVISOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevisor}
bin="$cache/quantity/apimachinery-$apimachinery-$key/bin"
if [ -x "$bin/quantity" ]; then
  echo "$bin"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "not built yet: $bin (run hack/quantity/build.sh)" >&2
  exit 1
fi
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
tmp="$bin.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "building the quantity oracle (apimachinery $apimachinery) into $bin (first time only) ..." >&2
go build -trimpath -ldflags "-s -w" -o "$tmp/quantity" .
rm -rf "$bin" && mv "$tmp" "$bin"
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
