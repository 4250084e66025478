"""Whether this machine should run guests with KVM or fall back to QEMU's TCG.

The agent asks once at start-up and passes the answer to `core.domain` (as the domain type
"kvm" or "qemu"); the testbed asks the same question. A quick probe boot would settle it but
takes too long, so this decides from the device and from whether we are nested.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO, 0x00)
KVM_API_VERSION = 12


def kvm_usable(
    *,
    trust_nested: bool = False,
    device: Path = Path("/dev/kvm"),
    cpuinfo: Path = Path("/proc/cpuinfo"),
) -> bool:
    """True when /dev/kvm answers with the stable KVM API and we are not nested (unless
    `trust_nested`): nested KVM on our machines hangs the default CPU model at boot and
    fails host-passthrough on an MSR, so a guest of a guest runs on TCG by default."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, KVM_GET_API_VERSION) != KVM_API_VERSION:
            return False
    except OSError:
        return False
    finally:
        os.close(fd)
    return trust_nested or not nested(cpuinfo)


def nested(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this machine is itself a virtual machine (the CPU's "hypervisor" flag)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    return any(
        line.startswith("flags") and "hypervisor" in line.split(":", 1)[1].split()
        for line in text.splitlines()
    )
