"""What each hypervisor type can do, and what a VirtualMachine spec asks of it.

Pure. Three callers read the table: placement's `hypervisor_capabilities` filter turns
down hosts whose type lacks a feature the VM asks for; the controller refuses a live
migration away from a type without `LIVE_MIGRATION`; and a drain stops such VMs (a cold
move) instead of migrating them.

The table says what kubevisor's driver for each type does, not what the hypervisor could
do in principle; a feature joins a type's row when its driver renders it:

- kvm, qemu: libvirt QEMU domains (`core.domain`), with or without hardware
  virtualisation: every feature.
- lxc: libvirt LXC system containers, processes of the host's own kernel in namespaces
  and cgroups. There is no guest kernel, so nothing that configures one: no firmware
  (UEFI, Secure Boot), no direct kernel boot, no guest CPU model, flags or topology, no
  guest NUMA cells and no vCPUs pinned for a separate kernel (dedicated CPUs), no huge
  pages backing guest RAM, no memory balloon. The root filesystem is a directory, so no
  block-device disks and no cloud-init seed disk; no PCI passthrough. Interfaces are veth
  pairs into a libvirt network or bridge: no QEMU user-mode networking, no multiqueue.
  libvirt's LXC driver has no live migration (a container has no memory image to send);
  it is stopped and started elsewhere. CPU shares and quota work: they are cgroup limits.
  It runs only `spec.container` (a root filesystem and an init), which no other type
  runs: every VM without one asks for a guest kernel (`core.domain` refuses either
  mismatch too, docs/lxc.md).
- vmware: `drivers/vsphere/` creates a vSphere VM from the name, uuid, memory and vCPU
  count of the domain the agent renders, powers it on and off, suspends it, and moves it
  with vMotion. vSphere itself has EFI, Secure Boot, DirectPath I/O, virtual NUMA and
  more, but none of them is mapped yet, nor disks or network interfaces.
- test: libvirt's test driver and the in-memory fake driver accept any domain, so the
  test suites can take every path through them; they render VMs, not containers.

A host that reports no type (an agent from before the field) is not judged by the table;
libvirt then refuses what it cannot do when the domain is defined, and the VM says so.
Confinement (a seccomp sandbox, a security driver) is per host, not per type: placement's
`capabilities` filter checks what each host reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    # Only read, never built here: placement's values stay free of the API models.
    from kubevisor.api.virtualmachine import Network, VirtualMachineSpec


class Feature(StrEnum):
    """Something a hypervisor type may or may not do for a VM."""

    LIVE_MIGRATION = "live-migration"
    DEDICATED_CPUS = "dedicated-cpus"
    GUEST_NUMA = "guest-numa"
    HUGEPAGES = "hugepages"
    MEMORY_BALLOON = "memory-balloon"
    CPU_MODEL = "cpu-model"
    CPU_FLAGS = "cpu-flags"
    CPU_TOPOLOGY = "cpu-topology"
    CPU_TUNE = "cpu-tune"
    UEFI = "uefi"
    SECURE_BOOT = "secure-boot"
    KERNEL_BOOT = "kernel-boot"
    DISKS = "disks"
    CLOUD_INIT = "cloud-init"
    NETWORKS = "networks"
    USER_NETWORKING = "user-networking"
    MULTIQUEUE = "multiqueue"
    PCI_PASSTHROUGH = "pci-passthrough"
    GUEST_KERNEL = "guest-kernel"
    CONTAINER = "container"


#: What a rejection calls each feature, and the spec field that asks for it.
WORDS: Final[Mapping[Feature, tuple[str, str | None]]] = MappingProxyType(
    {
        Feature.LIVE_MIGRATION: ("live migration", None),
        Feature.DEDICATED_CPUS: ("dedicated (pinned) vCPUs", "spec.cpu.policy"),
        Feature.GUEST_NUMA: ("guest NUMA cells", "spec.numa"),
        Feature.HUGEPAGES: ("huge pages backing guest memory", "spec.memory.hugepages"),
        Feature.MEMORY_BALLOON: ("memory balloon", "spec.memory.balloon"),
        Feature.CPU_MODEL: ("guest CPU model", "spec.cpu.model"),
        Feature.CPU_FLAGS: ("guest CPU flags", "spec.cpu.features, spec.cpu.disabledFeatures"),
        Feature.CPU_TOPOLOGY: ("guest CPU topology", "spec.cpu.sockets, cores, threads"),
        Feature.CPU_TUNE: ("CPU shares and quota", "spec.cpu.tune"),
        Feature.UEFI: ("UEFI firmware", "spec.firmware"),
        Feature.SECURE_BOOT: ("Secure Boot", "spec.firmware.secureBoot"),
        Feature.KERNEL_BOOT: ("direct kernel boot", "spec.boot"),
        Feature.DISKS: ("block-device disks", "spec.disks"),
        Feature.CLOUD_INIT: ("cloud-init seed disk", "spec.cloudInit"),
        Feature.NETWORKS: ("network interfaces", "spec.networks"),
        Feature.USER_NETWORKING: ("user-mode networking", "spec.networks[].type"),
        Feature.MULTIQUEUE: ("multiqueue interfaces", "spec.networks[].multiqueue"),
        Feature.PCI_PASSTHROUGH: ("PCI passthrough", "spec.devices.pci"),
        Feature.GUEST_KERNEL: ("guest kernel, which a VM without spec.container boots", None),
        Feature.CONTAINER: ("system containers", "spec.container"),
    }
)

EVERYTHING: Final = frozenset(Feature)
VIRTUAL_MACHINES: Final = EVERYTHING - {Feature.CONTAINER}

#: The capability table: what kubevisor does on each hypervisor type (module docstring).
SUPPORTED: Final[Mapping[str, frozenset[Feature]]] = MappingProxyType(
    {
        "kvm": VIRTUAL_MACHINES,
        "qemu": VIRTUAL_MACHINES,
        "lxc": frozenset({Feature.CPU_TUNE, Feature.NETWORKS, Feature.CONTAINER}),
        "vmware": frozenset({Feature.LIVE_MIGRATION, Feature.GUEST_KERNEL}),
        "test": VIRTUAL_MACHINES,
    }
)

#: Why a type lacks live migration, for the refusal of a MigrationJob.
NO_LIVE_MIGRATION: Final[Mapping[str, str]] = MappingProxyType(
    {
        "lxc": "a system container has no memory state to move",
    }
)


def supported(hypervisor_type: str) -> frozenset[Feature]:
    """The features of a type; a type not in the table (unknown) is not judged."""
    return SUPPORTED.get(hypervisor_type, EVERYTHING)


def missing(hypervisor_type: str, wanted: Iterable[Feature]) -> frozenset[Feature]:
    """The features of `wanted` the type lacks."""
    return frozenset(wanted) - supported(hypervisor_type)


def can_live_migrate(hypervisor_type: str) -> bool:
    return Feature.LIVE_MIGRATION in supported(hypervisor_type)


def describe(features: Iterable[Feature]) -> str:
    """`guest NUMA cells (spec.numa) or UEFI firmware (spec.firmware)`, in table order, to
    follow "lxc has no"."""
    chosen = set(features)
    parts = []
    for feature in Feature:
        if feature in chosen:
            words, field = WORDS[feature]
            parts.append(f"{words} ({field})" if field else words)
    if len(parts) < 2:
        return "".join(parts)
    return f"{', '.join(parts[:-1])} or {parts[-1]}"


def requested(spec: VirtualMachineSpec) -> frozenset[Feature]:
    """The features a VM spec asks for. Live migration is never one: `evictionStrategy:
    LiveMigrate` (the default) is how a drain should move the VM where it can, and a VM
    on a type without it is moved cold instead."""
    cpu, memory, firmware = spec.cpu, spec.memory, spec.firmware
    asked = {
        Feature.DEDICATED_CPUS: cpu.policy == "dedicated",
        Feature.GUEST_NUMA: spec.numa is not None,
        Feature.HUGEPAGES: memory.hugepages is not None,
        Feature.MEMORY_BALLOON: memory.balloon is not None,
        Feature.CPU_MODEL: cpu.model is not None,
        Feature.CPU_FLAGS: bool(cpu.features or cpu.disabled_features),
        Feature.CPU_TOPOLOGY: any(n is not None for n in (cpu.sockets, cpu.cores, cpu.threads)),
        Feature.CPU_TUNE: cpu.tune is not None,
        Feature.UEFI: firmware is not None and firmware.type == "uefi",
        Feature.SECURE_BOOT: firmware is not None and firmware.secure_boot,
        Feature.KERNEL_BOOT: spec.boot is not None,
        Feature.DISKS: bool(spec.disks),
        Feature.CLOUD_INIT: spec.cloud_init is not None,
        Feature.NETWORKS: bool(spec.networks),
        Feature.PCI_PASSTHROUGH: spec.devices is not None and bool(spec.devices.pci),
        Feature.GUEST_KERNEL: spec.container is None,
        Feature.CONTAINER: spec.container is not None,
    }
    interfaces = {feature for net in spec.networks for feature in interface_features(net)}
    return frozenset(feature for feature, wanted in asked.items() if wanted) | interfaces


def interface_features(network: Network) -> frozenset[Feature]:
    """The features one of a VM's network interfaces asks for, beyond having one (so a
    refusal can name the interfaces that ask)."""
    asked = {
        Feature.USER_NETWORKING: network.user_mode,
        Feature.MULTIQUEUE: bool(network.multiqueue),
    }
    return frozenset(feature for feature, wanted in asked.items() if wanted)
