"""The agent's part of its HypervisorHost status, from what the hypervisor reports.

The agent owns the facts (hypervisor, CPU, capacity, NUMA cells, its image cache); the
controller owns what
it judges from its placement state and the heartbeat (allocated, allocatable,
vmCount, the Ready and Schedulable conditions). Both apply their fields with
server-side apply under their own field manager.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from kubevisor.agent.imagecache import Entry
from kubevisor.api import quantity
from kubevisor.api.hypervisorhost import (
    CachedImage,
    Capacity,
    HostCapabilities,
    HostCpu,
    HostHugepages,
    HostNumaCell,
    HostStorage,
    Hypervisor,
    HypervisorHostStatus,
    HypervisorType,
    Ksm,
    PciDevice,
)
from kubevisor.core.domain.host import DomainType
from kubevisor.drivers.base import HostFacts

# What libvirt's getType() (or another driver's facts) says, for drivers whose domains
# are of one kind only; a QEMU connection runs kvm or qemu domains (the domain type).
_DRIVER_TYPES: Final[Mapping[str, HypervisorType]] = MappingProxyType(
    {"TEST": "test", "LXC": "lxc", "VMWARE": "vmware"}
)


def hypervisor_type(facts: HostFacts, domain_type: DomainType) -> HypervisorType:
    """kvm, qemu, lxc, vmware or test, as HypervisorHost.status.hypervisor.type spells
    them: placement's hypervisor_type and hypervisor_capabilities filters go by it."""
    return _DRIVER_TYPES.get(facts.hypervisor_type.upper(), domain_type)


def _usable_models(facts: HostFacts, domain_type: DomainType) -> list[str] | None:
    """The named CPU models usable for the domain type the agent runs; None when the
    hypervisor could not say (placement then does not check named models here)."""
    models = facts.usable_cpu_models.get(domain_type)
    return None if models is None else sorted(models)


MAX_IMAGES = 1024
"""status.images holds at most this many (the schema's maxItems): the most recently used."""


def cached_images(entries: Sequence[Entry], in_use: Mapping[str, int]) -> list[CachedImage]:
    """status.images: the image cache's files, each with the number of VM disks here
    backed by it (`in_use`, by digest), by digest."""
    recent = sorted(entries, key=lambda e: (-e.last_used, e.sha256))[:MAX_IMAGES]
    return [
        CachedImage(
            sha256=e.sha256,
            size=quantity.format_bytes(e.size),
            last_used=datetime.fromtimestamp(int(e.last_used), UTC),
            in_use=in_use.get(e.sha256, 0),
            shared=False,
        )
        for e in sorted(recent, key=lambda e: e.sha256)
    ]


def host_status(
    facts: HostFacts,
    *,
    domain_type: DomainType,
    disk_bytes: int,
    domain_type_message: str | None = None,
    ksm: Ksm | None = None,
    storage: HostStorage | None = None,
    capabilities: HostCapabilities | None = None,
    pci_devices: list[PciDevice] | None = None,
    images: list[CachedImage] | None = None,
) -> dict[str, Any]:
    """The wire dict of the agent-owned status fields."""
    cores = {(c.socket_id, c.core_id) for cell in facts.cells for c in cell.cpus}
    sockets = {c.socket_id for cell in facts.cells for c in cell.cpus}
    threads = max((len(c.siblings) for cell in facts.cells for c in cell.cpus), default=1)
    status = HypervisorHostStatus(
        ksm=ksm,
        storage=storage,
        capabilities=capabilities,
        pci_devices=pci_devices or [],
        images=images or [],
        hypervisor=Hypervisor(
            type=hypervisor_type(facts, domain_type),
            version=facts.hypervisor_version,
            libvirt_version=facts.libvirt_version,
            message=domain_type_message,
        ),
        libvirt_uri=facts.uri,
        cpu=HostCpu(
            model=facts.cpu_model,
            vendor=facts.cpu_vendor,
            features=sorted(facts.cpu_features),
            sockets=len(sockets) or None,
            cores=(len(cores) // len(sockets)) if sockets else None,
            threads=threads,
            usable_models=_usable_models(facts, domain_type),
        ),
        capacity=Capacity(
            cpu=facts.cpus,
            memory=quantity.format_bytes(facts.memory_kib * 1024),
            disk=quantity.format_bytes(disk_bytes),
        ),
        numa_cells=[
            HostNumaCell(
                id=cell.id,
                cpus=sorted(c.id for c in cell.cpus),
                siblings=[list(s) for s in sorted({tuple(sorted(c.siblings)) for c in cell.cpus})],
                memory=quantity.format_bytes(cell.memory_kib * 1024),
                hugepages=[
                    HostHugepages(
                        page_size=quantity.format_bytes(page.size_kib * 1024),
                        total=page.total,
                        free=page.total if page.free is None else page.free,
                    )
                    for page in cell.pages
                    if page.size_kib > 4
                ],
            )
            for cell in facts.cells
        ],
    )
    wire = status.to_wire()
    wire.pop("conditions", None)
    return wire
