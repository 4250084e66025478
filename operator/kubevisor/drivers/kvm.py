"""Whether this machine should run guests with KVM or fall back to QEMU's TCG.

The agent probes once at start-up (`probe`) and decides its domain type from the answer
(`agent.main.domain_type`: "kvm" or "qemu"), reporting why it does not use KVM in its
HypervisorHost status. A quick probe boot would settle it but takes too long, so this
decides from the device and from whether we are nested.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
from pathlib import Path

KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO, 0x00)
KVM_API_VERSION = 12


@dataclasses.dataclass(frozen=True)
class Probe:
    """What this machine says about KVM.

    `device_problem` is why /dev/kvm cannot be used (None: it answers the stable KVM API);
    `nested` whether this machine is itself a virtual machine.
    """

    device_problem: str | None
    nested: bool

    def problem(self, *, trust_nested: bool = False) -> str | None:
        """Why guests should not run with KVM here; None when they may.

        Nested KVM on our machines hangs the default CPU model at boot and fails
        host-passthrough on an MSR, so a guest of a guest runs on TCG unless
        `trust_nested`.
        """
        if self.device_problem is not None:
            return self.device_problem
        if self.nested and not trust_nested:
            return (
                "this host is itself a virtual machine (the CPU's hypervisor flag), and "
                "nested KVM is unreliable"
            )
        return None


def probe(*, device: Path = Path("/dev/kvm"), cpuinfo: Path = Path("/proc/cpuinfo")) -> Probe:
    """Ask the device for its KVM API version and the CPU flags whether we are nested."""
    return Probe(device_problem=_device_problem(device), nested=nested(cpuinfo))


def _device_problem(device: Path) -> str | None:
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        return f"{device} cannot be opened ({error.strerror})"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as error:
        return f"{device} is not a KVM device ({error.strerror})"
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return f"{device} speaks KVM API version {version}, not {KVM_API_VERSION}"
    return None


def kvm_usable(
    *,
    trust_nested: bool = False,
    device: Path = Path("/dev/kvm"),
    cpuinfo: Path = Path("/proc/cpuinfo"),
) -> bool:
    """True when /dev/kvm answers with the stable KVM API and we are not nested (unless
    `trust_nested`)."""
    return probe(device=device, cpuinfo=cpuinfo).problem(trust_nested=trust_nested) is None


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
