#!/usr/bin/env bash
# Installs what kubevisor needs on this machine, idempotently; cheap when already done.
#   - Debian packages (libvirt, QEMU, the guest kernel, busybox; dnsmasq and nftables for the
#     hosts' networks; prometheus for promtool, which tests the alerts; chromium, which opens
#     the web console in its test; npm where no Node.js came with the machine; buildah,
#     mmdebstrap, umoci and runc, which build and run the images) when running as root
#   - a virtualenv in .venv with the package and its dev tools
#   - kube-apiserver, kubectl and etcd, and vcsim (the vSphere simulator), built from Go
#     modules into a cache outside the repo; noVNC (`kubevisor console --web`) from npm into
#     the same cache
# Prints nothing but progress on stderr; the last line on stdout is the control-plane bin dir.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

debs=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-driver-lxc libvirt-clients libvirt-dev
  pkg-config
  qemu-system-x86 qemu-utils linux-image-cloud-amd64 busybox-static genisoimage cpio
  iproute2 util-linux ovmf syslinux syslinux-common mtools dosfstools
  dnsmasq-base nftables
  prometheus
  chromium
  buildah mmdebstrap umoci runc
)
# npm installs noVNC (hack/novnc/build.sh); a Node.js from elsewhere brings its own npm, and
# Debian's npm package would conflict with it.
command -v npm >/dev/null || debs+=(npm)
missing=()
for deb in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "install ok installed" || missing+=("$deb")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    # Only its promtool is wanted: a Prometheus server started by the package would hold
    # port 9090, the controller's metrics port.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
      systemctl disable --now prometheus.service >&2 || true
    fi
  else
    echo "missing Debian packages (run as root to install): ${missing[*]}" >&2
  fi
fi

python=${PYTHON:-python3}
stamp=.venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "creating .venv with kubevisor and its dev tools" >&2
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/pip install -q --upgrade pip >&2
  .venv/bin/pip install -q -e '.[dev]' >&2
  rm -f .venv/.installed-* && touch "$stamp"
fi

hack/vcsim/build.sh >/dev/null
hack/quantity/build.sh >/dev/null
if command -v npm >/dev/null || [ "${CI:-}" = true ]; then
  hack/novnc/build.sh >/dev/null
else
  echo "npm missing: noVNC not installed (kubevisor console --web and its test need it)" >&2
fi
hack/controlplane/build.sh
