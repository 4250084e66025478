#!/usr/bin/env bash
# Installs noVNC (the npm package @novnc/novnc, pinned with its integrity hash by
# package.json and package-lock.json beside this script) into a cache outside the repo,
# keyed by its version; prints the package's directory (holding core/rfb.js), which
# `kubevisor console VM --web` serves (its default --novnc is this directory). Reuses the
# cache when it is there; installs with `npm ci` when it is missing (about a second).
#   build.sh          install if needed, print the package directory
#   build.sh --check  print the package directory if installed, else exit 1 (never installs)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
version=$(sed -n 's/^ *"@novnc\/novnc": "\([0-9][0-9.]*\)",\{0,1\}$/\1/p' package.json | head -1)
[ -n "$version" ] || { echo "no exact @novnc/novnc version in $here/package.json" >&2; exit 1; }
cache=${KUBEVISOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevisor}
dir="$cache/novnc/novnc-$version"
package="$dir/node_modules/@novnc/novnc"
if [ -f "$package/core/rfb.js" ]; then
  echo "$package"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "not installed yet: $package (run hack/novnc/build.sh)" >&2
  exit 1
fi
command -v npm >/dev/null || { echo "npm is needed to install noVNC (Debian: apt-get install npm)" >&2; exit 1; }
tmp="$dir.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "installing noVNC $version into $dir (first time only) ..." >&2
cp package.json package-lock.json "$tmp/"
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
rm -rf "$dir" && mv "$tmp" "$dir"
echo "installed in $(( $(date +%s) - start )) s" >&2
echo "$package"
