#!/usr/bin/env bash
# The base image both of kubevisor's images start from when no registry is reachable: Debian
# bookworm (minbase, merged /usr) with python3.11, venv and CA certificates, made by
# mmdebstrap from Debian's packages — the stand-in for python:3.11-slim-bookworm. Called by
# build.sh with its buildah command line; imports the image into that storage once and
# prints its name. The tarball is kept beside the storage, keyed by this file's hash.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
buildah=("$@")
cache=${KUBEVISOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevisor}/images
key=$(cat "$0" "$here/docker-clean" | sha256sum | cut -c1-12)
image="localhost/kubevisor-base:bookworm-python3.11-$key"
if "${buildah[@]}" inspect --type image "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi
tar="$cache/base/$key.tar"
if [ ! -s "$tar" ]; then
  echo "making the base image with mmdebstrap (first time only) ..." >&2
  mkdir -p "$cache/base"
  mirror=${KUBEVISOR_DEBIAN_MIRROR:-http://deb.debian.org}
  # Like Debian's and python's slim images: no docs, man pages or translations, and apt
  # keeps no downloaded packages or caches in the layers that install.
  mmdebstrap --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include=python3,python3-venv,python-is-python3,ca-certificates \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='cp "'"$here"'/docker-clean" "$1/etc/apt/apt.conf.d/docker-clean"' \
    --customize-hook='rm -f "$1"/var/cache/apt/*.bin' \
    bookworm "$tar.tmp.tar" \
    "deb $mirror/debian bookworm main" "deb $mirror/debian bookworm-updates main" \
    "deb $mirror/debian-security bookworm-security main" >&2
  mv "$tar.tmp.tar" "$tar"
fi
ctr=$("${buildah[@]}" from scratch)
"${buildah[@]}" add --quiet "$ctr" "$tar" / >&2
"${buildah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 --cmd python3 "$ctr" >&2
"${buildah[@]}" commit --quiet --rm "$ctr" "$image" >&2
echo "$image"
