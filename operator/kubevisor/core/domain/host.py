"""The host as the domain XML needs it: what the agent detected and prepared there.

The agent builds a `HostEnvironment` per VM it defines (`agent.Agent.environment`) and
probes the files `Ovmf` names (`agent.probe`); `DomainType` is also the hypervisor type
a HypervisorHost reports (`agent.hoststatus`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from kubevisor.api import cpuset

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
class Nic:
    """Where one interface on a Network plugs in on this host (`core.network.hostinputs.nics`):
    the Network's bridge, the MAC the controller allocated, and the tap name the host's port
    security rules expect (`hostplan.PortSecurity.tap`)."""

    bridge: str
    mac: str
    tap: str


@dataclass(frozen=True, slots=True)
class IdRange:
    """Host ids a container's ids 0..count-1 map to: start..start+count-1. The default is
    the range Debian's first /etc/subuid entry gives (100000, 65536 ids)."""

    start: int = 100000
    count: int = 65536


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
    host_paths: Mapping[str, str] | None = None
    """The real paths of the host files the spec names (boot.kernel, boot.initrd,
    container.rootfs), by field, as `core.hostpaths.resolve_spec` found them inside the
    directories the host's admin allows; the domain names these, never the spec's
    strings. None: nothing was resolved and the spec's paths are used as written (unit
    tests of other concerns; the agent always resolves)."""
    container_ids: IdRange | None = field(default_factory=IdRange)
    """The host uids and gids a system container's root and users map to (a user
    namespace, `<idmap>`); None: the host's admin allows privileged containers, whose root
    is the host's root."""
    shared_cpus: frozenset[int] | None = None
    """Host CPUs shared-policy VMs float over (`shared_cpus`, from the HypervisorHost's
    spec); None: the host has no shared set, and they float over every CPU."""
    nics: Mapping[str, Nic] = field(default_factory=dict)
    """Interface name -> its attachment, for the VM's interfaces on Networks (the agent
    realised them on this host first); an interface on a Network missing here is refused."""


def shared_cpus(
    *, cpu_shared_set: str | None, cpu_dedicated_set: str | None
) -> frozenset[int] | None:
    """The CPUs of a HypervisorHost's spec that shared VMs run on: its cpuSharedSet less
    its cpuDedicatedSet (Nova's cpu_shared_set), as placement counts them for capacity.

    None when the admin set no shared set: shared VMs keep floating over every CPU, as
    before. With no dedicated set either, every CPU is shared anyway; with one, placement
    counts no shared CPU on the host and sends it no shared VM. Raises ValueError on a
    set that is not a cpuset.
    """
    if not cpu_shared_set:
        return None
    dedicated = cpuset.parse(cpu_dedicated_set) if cpu_dedicated_set else frozenset()
    return cpuset.parse(cpu_shared_set) - dedicated
