"""Host facts libvirt does not report, read from the host itself by the agent.

KSM from /sys/kernel/mm/ksm, the storage holding the VMs' overlays (statvfs plus the
overlays' virtual and real sizes), and the capabilities a VM may require (OVMF for UEFI
and Secure Boot, /dev/vhost-net, the QEMU sandbox and cgroup controllers of the host's
qemu.conf, with the security driver libvirt reports). Each reader takes its paths as
arguments so tests point it at a directory of their own. `pci_inventory` matches the
driver's PCI devices against the HypervisorHost's allow-list.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from kubevisor.api import quantity
from kubevisor.api.hypervisorhost import (
    HostCapabilities,
    HostStorage,
    Ksm,
    PciDevice,
    PciPassthroughRule,
    SecurityDriver,
)
from kubevisor.core.domain.host import Ovmf
from kubevisor.drivers.base import PciDeviceInfo

KSM = Path("/sys/kernel/mm/ksm")
VHOST_NET = Path("/dev/vhost-net")


def ksm(root: Path = KSM) -> Ksm | None:
    """KSM's state, or None where the kernel has no KSM."""
    try:
        run = (root / "run").read_text().strip()
    except OSError:
        return None
    return Ksm(
        running=run == "1",
        pages_shared=_int(root / "pages_shared"),
        pages_sharing=_int(root / "pages_sharing"),
    )


def _int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def storage(
    *, disk_root: Path, virtual_bytes: int, image_cache_bytes: int | None = None
) -> HostStorage:
    """The filesystem of `disk_root`, with the overlays' virtual sizes and real usage, and
    the image cache's real size when given."""
    disk_root.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(disk_root)
    used = sum(p.stat().st_blocks * 512 for p in disk_root.rglob("*.qcow2") if p.is_file())
    return HostStorage(
        capacity=quantity.format_bytes(usage.total),
        available=quantity.format_bytes(usage.free),
        provisioned=quantity.format_bytes(virtual_bytes),
        used=quantity.format_bytes(used),
        image_cache=None if image_cache_bytes is None else quantity.format_bytes(image_cache_bytes),
    )


def security_driver(models: Sequence[str]) -> SecurityDriver | None:
    """The confining driver among libvirt's <secmodel>s; "none" when libvirt reports only
    DAC or none (qemu.conf security_driver = "none"); None when it reports nothing."""
    if "apparmor" in models:
        return "apparmor"
    if "selinux" in models:
        return "selinux"
    return "none" if models else None


def _read(qemu_conf: Path | None) -> str | None:
    """The text of the host's qemu.conf for the settings read from it below; None when
    the agent is not given the file or cannot read it."""
    if qemu_conf is None:
        return None
    try:
        return qemu_conf.read_text()
    except OSError:
        return None


_SECCOMP = re.compile(r"^\s*seccomp_sandbox\s*=\s*(\d+)", re.MULTILINE)


def seccomp_sandbox(qemu_conf: Path | None) -> bool | None:
    """Whether libvirt starts QEMU under its seccomp sandbox, from the host's qemu.conf:
    `seccomp_sandbox = 0` turns it off, anything else (or no setting: libvirt's default
    is on wherever QEMU supports it, as every QEMU in our supported distributions does)
    leaves it on. None when the agent is not given the file or cannot read it: libvirt's
    API does not say."""
    if (text := _read(qemu_conf)) is None:
        return None
    found = _SECCOMP.findall(text)
    return found[-1] != "0" if found else True


_CGROUPS = re.compile(r"^[ \t]*cgroup_controllers[ \t]*=[ \t]*\[([^\]]*)\]", re.MULTILINE)
_QUOTED = re.compile(r"\"([^\"]*)\"|'([^']*)'")


def cgroup_controllers(qemu_conf: Path | None) -> frozenset[str] | None:
    """The cgroup controllers the host's qemu.conf lets libvirt use for VMs
    (`cgroup_controllers = [ "cpu", "memory" ]`; `[ ]`: none), for an agent whose command
    line does not name them. None when the agent is not given the file or cannot read it,
    or when the file leaves the choice to libvirt (every controller the host mounts):
    unknown, which the renderer takes as all."""
    if (text := _read(qemu_conf)) is None:
        return None
    found = _CGROUPS.findall(text)
    if not found:
        return None
    listed = re.sub(r"#[^\n]*", "", found[-1])
    return frozenset(double or single for double, single in _QUOTED.findall(listed))


def capabilities(
    ovmf: Ovmf,
    *,
    vhost_net: Path = VHOST_NET,
    security_models: Sequence[str] = (),
    cgroup_controllers: Iterable[str] | None = None,
    qemu_conf: Path | None = None,
    containers: bool = False,
) -> HostCapabilities:
    """What a VM may require of this host. `security_models` are the host's libvirt
    secmodels; `cgroup_controllers` what libvirt uses for VMs (the agent's setting,
    None when unknown); `qemu_conf` the host's qemu.conf, for the seccomp sandbox that
    libvirt does not report. A host that runs `containers` (libvirt LXC) has no UEFI,
    vhost-net or QEMU sandbox to offer, whatever files this machine holds."""
    vm = not containers
    return HostCapabilities(
        seccomp_sandbox=seccomp_sandbox(qemu_conf) if vm else False,
        uefi=vm and os.path.isfile(ovmf.code) and os.path.isfile(ovmf.vars_template),
        secure_boot=vm
        and os.path.isfile(ovmf.secure_code)
        and os.path.isfile(ovmf.secure_vars_template),
        vhost_net=vm and vhost_net.exists(),
        security_driver=security_driver(security_models),
        cgroup_controllers=sorted(cgroup_controllers) if cgroup_controllers is not None else [],
    )


_PCI_RULES = TypeAdapter(list[PciPassthroughRule])


def pci_rules(host: Mapping[str, Any] | None) -> list[PciPassthroughRule]:
    """The allow-list of a HypervisorHost object as read from the API (none if absent).

    Reads spec.pciPassthrough alone: a mistake elsewhere in the admin's spec (CPU sets the
    controller refuses) must not stop the agent from registering its host."""
    spec = (host or {}).get("spec") or {}
    return _PCI_RULES.validate_python(spec.get("pciPassthrough") or [])


def pci_inventory(
    rules: Sequence[PciPassthroughRule], devices: Iterable[PciDeviceInfo]
) -> list[PciDevice]:
    """The host devices the allow-list offers, each under the alias of the first rule it
    matches (vendor id, and product id when the rule names one), by address."""
    offered = []
    for device in sorted(devices, key=lambda d: d.address):
        for rule in rules:
            if rule.vendor_id == device.vendor_id and rule.product_id in (
                None,
                device.product_id,
            ):
                offered.append(
                    PciDevice(
                        address=device.address,
                        vendor_id=device.vendor_id,
                        product_id=device.product_id,
                        numa_cell=device.numa_node,
                        alias=rule.alias,
                    )
                )
                break
    return offered
