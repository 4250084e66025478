#!/usr/bin/env bash
# Builds the Dockerfile's `controller` and `agent` images without a Docker engine: buildah
# (rootful, overlay storage, chroot isolation) on a base image made from Debian packages by
# mmdebstrap (hack/images/base.sh), since no container registry is reachable here. Outputs
# go to a cache outside the repo keyed by a content hash of every input (Dockerfile,
# .dockerignore, requirements.lock, pyproject.toml, README.md, operator/ as the build
# context sends it, these scripts); buildah's layer cache lives there too, so a change to
# operator/ alone rebuilds only the last layers.
#   build.sh          build if needed; prints the directory holding controller.oci.tar and
#                     agent.oci.tar (OCI archives, tag `latest`)
#   build.sh --check  print that directory if it is built, else exit 1 (never builds)
# Env: KUBEVISOR_CACHE (default ~/.cache/kubevisor); KUBEVISOR_BUILD_CA, a CA bundle the
# build's pip trusts (default: the host's /etc/ssl/certs/ca-certificates.crt; a TLS-
# intercepting proxy's CA lives there), mounted at build time only, never into a layer.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${KUBEVISOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubevisor}/images
# Bump recipe when the way the images are built changes (flags, the set of images).
recipe=1
inputs() {
  cd "$root"
  printf '%s\n' "recipe=$recipe" Dockerfile .dockerignore requirements.lock pyproject.toml README.md
  find operator -type f ! -path 'operator/kubevisor/testbed/*' ! -path '*/__pycache__/*' \
    ! -path '*.egg-info/*' ! -name '*.pyc' | LC_ALL=C sort
  find hack/images -type f | LC_ALL=C sort
}
key=$(cd "$root" && inputs | while read -r f; do
  if [ -f "$f" ]; then echo "$f $(sha256sum <"$f" | cut -c1-64)"; else echo "$f"; fi
done | sha256sum | cut -c1-12)
out="$cache/out/$key"
if [ -s "$out/controller.oci.tar" ] && [ -s "$out/agent.oci.tar" ]; then
  echo "$out"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "not built yet: $out (run hack/images/build.sh)" >&2
  exit 1
fi
for tool in buildah mmdebstrap; do
  command -v "$tool" >/dev/null || { echo "$tool missing: run hack/setup.sh as root" >&2; exit 1; }
done
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
buildah=(buildah --root "$cache/storage" --runroot "$cache/run" --storage-driver overlay)
# Each change of the inputs adds ~200 MB of layers: past 4 GB start the layer cache afresh
# (the base tarball stays, so that build takes about a cold one less mmdebstrap).
if [ -d "$cache/storage" ] && [ "$(du -sm "$cache/storage" | cut -f1)" -gt 4096 ]; then
  echo "layer cache over 4 GB: removing its images" >&2
  "${buildah[@]}" rmi --all --force >/dev/null
fi
start=$(date +%s)
base=$("$here/base.sh" "${buildah[@]}")
echo "building kubevisor's images into $out (first time for these inputs) ..." >&2
ca=${KUBEVISOR_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
mounts=()
if [ -s "$ca" ]; then
  mounts=(--volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro" --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
fi
tmp="$out.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
bud=("${buildah[@]}" bud --layers --isolation chroot --pull-never --quiet "${mounts[@]}"
  --build-arg "PYTHON_IMAGE=$base" --build-arg "SOURCE_HASH=$key")
# buildah 1.28 (Debian 12) may bind-mount a stale image for `RUN --mount=from=STAGE` when
# that stage came from its layer cache (buildah issues 4375 and 4522, fixed in 1.29). So the
# wheels stage is built and tagged first, and the images are built from a copy of the
# Dockerfile whose mounts name that tag instead of the stage.
wheels="localhost/kubevisor-wheels:$key"
"${bud[@]}" --target wheels --tag "$wheels" "$root" >&2
sed "s|from=wheels,|from=$wheels,|" "$root/Dockerfile" >"$tmp/Dockerfile"
for target in controller agent; do
  "${bud[@]}" --file "$tmp/Dockerfile" --target "$target" \
    --tag "localhost/kubevisor-$target:$key" "$root" >&2
  "${buildah[@]}" push --quiet "localhost/kubevisor-$target:$key" \
    "oci-archive:$tmp/$target.oci.tar:latest" >&2
done
rm "$tmp/Dockerfile"
rm -rf "$out" && mv "$tmp" "$out"
# Keep the last three builds' archives; the layer cache stays in $cache/storage.
ls -1dt "$cache"/out/*/ | tail -n +4 | xargs -r rm -rf
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$out"
