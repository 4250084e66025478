"""Host facts libvirt does not report, read from the host itself by the agent.

KSM from /sys/kernel/mm/ksm, the storage holding the VMs' overlays (statvfs plus the
overlays' virtual and real sizes), and the capabilities a VM may require (OVMF for UEFI
and Secure Boot, /dev/vhost-net). Each reader takes its paths as arguments so tests point
it at a directory of their own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kubevisor.api import quantity
from kubevisor.api.hypervisorhost import HostCapabilities, HostStorage, Ksm
from kubevisor.core.domain import Ovmf

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


def storage(*, disk_root: Path, virtual_bytes: int) -> HostStorage:
    """The filesystem of `disk_root`, with the overlays' virtual sizes and real usage."""
    disk_root.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(disk_root)
    used = sum(p.stat().st_blocks * 512 for p in disk_root.rglob("*.qcow2") if p.is_file())
    return HostStorage(
        capacity=quantity.format_bytes(usage.total),
        available=quantity.format_bytes(usage.free),
        provisioned=quantity.format_bytes(virtual_bytes),
        used=quantity.format_bytes(used),
    )


def capabilities(ovmf: Ovmf, *, vhost_net: Path = VHOST_NET) -> HostCapabilities:
    return HostCapabilities(
        uefi=os.path.isfile(ovmf.code) and os.path.isfile(ovmf.vars_template),
        secure_boot=os.path.isfile(ovmf.secure_code) and os.path.isfile(ovmf.secure_vars_template),
        vhost_net=vhost_net.exists(),
    )
