"""Small builders for placement tests: hosts with readable CPU numbering.

CPU ids are contiguous per cell and per core: on a host with 2 cells of 4 cores x 2
threads, cell 0 holds CPUs 0-7 with sibling pairs {0,1} {2,3} {4,5} {6,7}.
"""

from __future__ import annotations

from collections.abc import Mapping

from kubevisor.core.hypervisors import Feature
from kubevisor.core.placement.model import (
    Capability,
    CpuPolicy,
    GroupPolicy,
    GuestCell,
    HostSnapshot,
    Hugepages,
    NumaCell,
    PciDevice,
    PciRequest,
    RatioOverrides,
    Request,
    ServerGroup,
    Storage,
    ThreadPolicy,
)

GIB = 1024


def make_cells(
    *,
    cells: int = 2,
    cores: int = 4,
    threads: int = 2,
    memory_mib: int = 32 * GIB,
    hugepages: Mapping[int, int] | None = None,
    hugepages_free: Mapping[int, int] | None = None,
) -> tuple[NumaCell, ...]:
    """`hugepages`: pages per size (KiB) on each cell; `hugepages_free`: how many of them
    the agent reports free (default all: none used outside kubevisor)."""
    out = []
    for c in range(cells):
        base = c * cores * threads
        siblings = tuple(
            frozenset(range(base + k * threads, base + (k + 1) * threads)) for k in range(cores)
        )
        pools = tuple(
            Hugepages(page_kib=size, total=count, free=(hugepages_free or {}).get(size, count))
            for size, count in sorted((hugepages or {}).items())
        )
        out.append(
            NumaCell(
                id=c,
                cpus=frozenset(range(base, base + cores * threads)),
                memory_mib=memory_mib,
                siblings=siblings if threads > 1 else (),
                hugepages=pools,
            )
        )
    return tuple(out)


def make_host(
    name: str = "h1",
    *,
    cells: int = 2,
    cores: int = 4,
    threads: int = 2,
    cell_memory_mib: int = 32 * GIB,
    dedicated: str | frozenset[int] = "none",
    hugepages: Mapping[int, int] | None = None,
    hugepages_free: Mapping[int, int] | None = None,
    disk_mib: int = 500 * GIB,
    labels: Mapping[str, str] | None = None,
    ratios: RatioOverrides | None = None,
    reserved_memory_mib: int = 0,
    reserved_vcpus: int = 0,
    schedulable: bool = True,
    maintenance: bool = False,
    ready: bool = True,
    cpu_model: str = "Skylake-Server",
    cpu_features: frozenset[str] = frozenset({"avx2", "vmx"}),
    cpu_vendor: str = "Intel",
    hypervisor_type: str = "kvm",
    capabilities: frozenset[Capability] = frozenset(),
    storage: Storage | None = None,
    reserved_disk_mib: int = 0,
    pci_devices: tuple[PciDevice, ...] = (),
    usable_cpu_models: frozenset[str] | None = None,
    images: frozenset[str] = frozenset(),
    shared_storage: str | None = None,
) -> HostSnapshot:
    """`dedicated`: "none" (all shared), "all", "half" (first half of each cell's cores)."""
    numa_cells = make_cells(
        cells=cells,
        cores=cores,
        threads=threads,
        memory_mib=cell_memory_mib,
        hugepages=hugepages,
        hugepages_free=hugepages_free,
    )
    every = frozenset(cpu for cell in numa_cells for cpu in cell.cpus)
    if dedicated == "none":
        pinned: frozenset[int] = frozenset()
    elif dedicated == "all":
        pinned = every
    elif dedicated == "half":
        pinned = frozenset(
            cpu
            for cell in numa_cells
            for core in (cell.siblings or tuple(frozenset({c}) for c in sorted(cell.cpus)))[
                : cores // 2
            ]
            for cpu in core
        )
    else:
        assert isinstance(dedicated, frozenset)
        pinned = dedicated
    return HostSnapshot(
        name=name,
        vcpus=len(every),
        memory_mib=cells * cell_memory_mib,
        disk_mib=disk_mib,
        shared_cpus=every - pinned,
        dedicated_cpus=pinned,
        reserved_vcpus=reserved_vcpus,
        reserved_memory_mib=reserved_memory_mib,
        ratios=ratios or RatioOverrides(),
        labels=dict(labels or {}),
        schedulable=schedulable,
        maintenance=maintenance,
        ready=ready,
        numa_cells=numa_cells,
        cpu_model=cpu_model,
        cpu_vendor=cpu_vendor,
        cpu_features=cpu_features,
        hypervisor_type=hypervisor_type,
        capabilities=capabilities,
        storage=storage,
        reserved_disk_mib=reserved_disk_mib,
        pci_devices=pci_devices,
        usable_cpu_models=usable_cpu_models,
        images=images,
        shared_storage=shared_storage,
    )


def make_request(
    name: str = "default/vm",
    *,
    vcpus: int = 2,
    memory_mib: int = 2 * GIB,
    disk_mib: int = 0,
    dedicated: bool = False,
    thread_policy: ThreadPolicy = ThreadPolicy.PREFER,
    emulator: bool = False,
    cells: tuple[tuple[tuple[int, ...], int], ...] = (),
    hugepage_kib: int | None = None,
    selector: Mapping[str, str] | None = None,
    group: str | None = None,
    policy: GroupPolicy = GroupPolicy.ANTI_AFFINITY,
    max_per_host: int = 1,
    cpu_features: frozenset[str] = frozenset(),
    required_cpu_model: str | None = None,
    hypervisor_types: frozenset[str] = frozenset(),
    features: frozenset[Feature] = frozenset(),
    exclude: frozenset[str] = frozenset(),
    cpu_mode: str | None = None,
    capabilities: frozenset[Capability] = frozenset(),
    pci: tuple[tuple[str, int], ...] = (),
    images: frozenset[str] = frozenset(),
    shared_storage: str | None = None,
) -> Request:
    """`cells`: ((vcpu indexes), memory MiB) per guest cell. `features` adds to those the
    other arguments ask for (dedicated CPUs, guest cells, huge pages, PCI devices), as
    `core.hypervisors.requested` derives them from a spec."""
    implied = {
        Feature.DEDICATED_CPUS: dedicated,
        Feature.GUEST_NUMA: bool(cells),
        Feature.HUGEPAGES: hugepage_kib is not None,
        Feature.PCI_PASSTHROUGH: bool(pci),
    }
    return Request(
        name=name,
        vcpus=vcpus,
        memory_mib=memory_mib,
        disk_mib=disk_mib,
        cpu_policy=CpuPolicy.DEDICATED if dedicated else CpuPolicy.SHARED,
        thread_policy=thread_policy,
        isolate_emulator_thread=emulator,
        numa_cells=tuple(
            GuestCell(id=i, vcpus=frozenset(cpus), memory_mib=mem)
            for i, (cpus, mem) in enumerate(cells)
        ),
        hugepage_kib=hugepage_kib,
        host_selector=dict(selector or {}),
        group=ServerGroup(group, policy, max_per_host) if group else None,
        cpu_features=cpu_features,
        required_cpu_model=required_cpu_model,
        hypervisor_types=hypervisor_types,
        features=features | {feature for feature, asked in implied.items() if asked},
        exclude_hosts=exclude,
        cpu_mode=cpu_mode,
        capabilities=capabilities,
        pci=tuple(PciRequest(alias, count) for alias, count in pci),
        images=images,
        shared_storage=shared_storage,
    )
