"""The host as the domain XML needs it: what the agent detected and prepared there.

The agent builds a `HostEnvironment` per VM it defines (`agent.Agent.environment`) and
probes the files `Ovmf` names (`agent.probe`); `DomainType` is also the hypervisor type
a HypervisorHost reports (`agent.hoststatus`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

DomainType = Literal["kvm", "qemu", "lxc", "test"]
"""libvirt's <domain type>: kvm and qemu (TCG) run a VM; lxc runs spec.container as a
system container on the host's kernel (`core.domain.container`)."""


@dataclass(frozen=True, slots=True)
class BootFiles:
    """A kernel and initrd on the host for direct kernel boot."""

    kernel: str
    initrd: str | None = None
    cmdline: str | None = None


@dataclass(frozen=True, slots=True)
class Ovmf:
    """UEFI firmware files on the host; the defaults are where Debian's `ovmf` puts them.

    The 4M builds: the 2M ones cannot hold Secure Boot's enrolled keys.
    """

    code: str = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    vars_template: str = "/usr/share/OVMF/OVMF_VARS_4M.fd"
    secure_code: str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
    """Secure Boot build: needs SMM (q35) so the guest OS cannot write the variables."""
    secure_vars_template: str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
    """Variables with Microsoft's keys enrolled (which sign shim and so Debian's kernels)."""


@dataclass(frozen=True, slots=True)
class HostEnvironment:
    """What the agent knows about its host and what it prepared on disk for one VM.

    The optional host facts default to "unknown", which renders the domain as if the host
    had the feature; the agent passes what it detected so the XML matches the host.
    """

    domain_type: DomainType
    disk_paths: Mapping[str, str] = field(default_factory=dict)
    """Disk name -> path of the qcow2 overlay the agent created for it."""
    seed_iso: str | None = None
    """NoCloud seed ISO built from spec.cloudInit, if any."""
    serial_log: str | None = None
    """File that receives everything the guest writes to its serial console."""
    default_boot: BootFiles | None = None
    """Direct-boot files used when the spec names neither boot files nor disks."""
    ovmf: Ovmf = field(default_factory=Ovmf)
    """UEFI firmware files, for spec.firmware.type uefi."""
    nvram: str | None = None
    """The VM's own UEFI variable store; None: libvirt's default file for the domain."""
    vhost_net: bool | None = None
    """True: virtio NICs on tap devices demand the vhost-net backend (libvirt fails when
    it is missing); False: QEMU's userspace backend; None: libvirt chooses (vhost when
    /dev/vhost-net exists)."""
    cgroup_controllers: frozenset[str] | None = None
    """cgroup controllers libvirt uses for VMs here; None: unknown (assume all)."""
    security_model: str | None = None
    """libvirt's security driver here (apparmor, selinux, none); None: unknown."""
