"""From the CRDs to placement values, and from decisions back to VM status.

The controller and the what-if simulator call these with the pydantic models of
`kubevisor.api` (parse raw objects with `HypervisorHost.model_validate(...)` first);
`state_from` turns a whole listing into a placement state for all of them.
Sizes go through `kubevisor.api.quantity`, CPU lists through `kubevisor.api.cpuset`.
Server groups are namespaced: group "db" in namespace "prod" is `prod/db`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from kubevisor.api import cpuset, objects, quantity
from kubevisor.api.conditions import find
from kubevisor.api.hypervisorhost import AllocationRatios as ApiRatios
from kubevisor.api.hypervisorhost import (
    HostCpu,
    Hypervisor,
    HypervisorHost,
    HypervisorHostSpec,
    HypervisorHostStatus,
    Reserved,
    Resources,
)
from kubevisor.api.network import NetworkSpec
from kubevisor.api.virtualmachine import (
    CellPlacement,
    ClaimedSize,
    HugepageAllocation,
    PciAssignment,
    PlacementStatus,
    VirtualMachine,
    VirtualMachineSpec,
    VirtualMachineStatus,
)
from kubevisor.api.virtualmachine import VcpuPin as ApiVcpuPin
from kubevisor.core import hypervisors
from kubevisor.core.placement import cpusets, scheduler
from kubevisor.core.placement.capacity import AllocationRatios
from kubevisor.core.placement.model import (
    Capability,
    CellFit,
    Claim,
    CpuPolicy,
    GroupPolicy,
    GuestCell,
    HostSnapshot,
    Hugepages,
    NamespacePool,
    NumaCell,
    NumaFit,
    PciClaim,
    PciDevice,
    PciRequest,
    RatioOverrides,
    Request,
    ServerGroup,
    Storage,
    ThreadPolicy,
    VcpuPin,
)
from kubevisor.core.placement.state import ClaimConflict, PlacementState
from kubevisor.core.placement.weighers import Multipliers


def _mib(text: str | None) -> int:
    return quantity.to_mib(text) if text else 0


def _capabilities(status: HypervisorHostStatus) -> frozenset[Capability]:
    """The capabilities a host reports; unknown (None) counts as absent."""
    caps = status.capabilities
    if caps is None:
        return frozenset()
    offered = {
        Capability.UEFI: caps.uefi,
        Capability.SECURE_BOOT: caps.secure_boot,
        Capability.SECCOMP_SANDBOX: caps.seccomp_sandbox,
        Capability.CONFINEMENT: caps.security_driver not in (None, "none"),
    }
    return frozenset(name for name, present in offered.items() if present)


def _storage(status: HypervisorHostStatus) -> Storage | None:
    reported = status.storage
    if reported is None or not reported.capacity or reported.available is None:
        return None
    return Storage(
        total_mib=_mib(reported.capacity),
        available_mib=_mib(reported.available),
        overlays_mib=_mib(reported.used),
        provisioned_mib=_mib(reported.provisioned),
    )


def _cells(status: HypervisorHostStatus) -> tuple[NumaCell, ...]:
    return tuple(
        NumaCell(
            id=cell.id,
            cpus=frozenset(cell.cpus),
            memory_mib=_mib(cell.memory),
            siblings=tuple(frozenset(group) for group in cell.siblings),
            hugepages=tuple(
                Hugepages(
                    page_kib=quantity.to_kib(pool.page_size), total=pool.total, free=pool.free
                )
                for pool in cell.hugepages
            ),
        )
        for cell in status.numa_cells
    )


class UnreadableHost(ValueError):
    """A HypervisorHost whose model validated but that placement cannot take as it is
    (`host_snapshot` raises it); the controller shows it on that host only."""


@dataclass(frozen=True, slots=True)
class _CpuSets:
    vcpus: int
    shared: frozenset[int]
    dedicated: frozenset[int]
    errors: tuple[str, ...]


def _cpu_sets(
    spec: HypervisorHostSpec, cells: tuple[NumaCell, ...], reported: int | None
) -> _CpuSets:
    """The host's CPU count and its shared and dedicated CPUs. With neither set given,
    every CPU is shared; with either given, CPUs in neither set are reserved (Nova's rule)."""
    every = frozenset(cpu for cell in cells for cpu in cell.cpus)
    # At most cpuset.MAX_CPUS: the status model bounds it, so the set below stays small.
    vcpus = reported or len(every)
    if not every:
        every = frozenset(range(vcpus))
    dedicated = cpuset.parse(spec.cpu_dedicated_set) if spec.cpu_dedicated_set else frozenset()
    if spec.cpu_shared_set:
        shared = cpuset.parse(spec.cpu_shared_set)
    else:
        shared = frozenset() if spec.cpu_dedicated_set else every
    errors = cpusets.errors(
        dedicated=dedicated, shared=shared, present=frozenset(cpu for c in cells for cpu in c.cpus)
    )
    return _CpuSets(vcpus=vcpus, shared=shared - dedicated, dedicated=dedicated, errors=errors)


def _ready(status: HypervisorHostStatus) -> bool:
    """Ready as the host's status last said (the controller judges heartbeats itself)."""
    condition = find(status.conditions, "Ready")
    return condition is not None and condition.status == "True"


def host_snapshot(host: HypervisorHost) -> HostSnapshot:
    """A HypervisorHost as placement sees it; a host without status yet has nothing.
    Raises UnreadableHost for values placement cannot take (its caller, the controller,
    shows any error here on that host alone)."""
    spec = host.spec
    status = host.status or HypervisorHostStatus()
    capacity = status.capacity or Resources()
    cpu = status.cpu or HostCpu()
    cells = _cells(status)
    cpus = _cpu_sets(spec, cells, capacity.cpu)
    ratios = spec.allocation_ratios or ApiRatios()
    reserved = spec.reserved or Reserved()
    return HostSnapshot(
        name=str(host.metadata.get("name", "")),
        vcpus=cpus.vcpus,
        memory_mib=_mib(capacity.memory) or sum(cell.memory_mib for cell in cells),
        disk_mib=_mib(capacity.disk),
        shared_cpus=cpus.shared,
        dedicated_cpus=cpus.dedicated,
        reserved_vcpus=reserved.cpu or 0,
        reserved_memory_mib=_mib(reserved.memory),
        reserved_disk_mib=_mib(reserved.disk),
        ratios=RatioOverrides(cpu=ratios.cpu, memory=ratios.memory, disk=ratios.disk),
        labels=dict(host.metadata.get("labels") or {}),
        schedulable=not spec.unschedulable,
        maintenance=spec.maintenance,
        ready=_ready(status),
        numa_cells=cells,
        cpu_model=cpu.model or "",
        cpu_vendor=cpu.vendor or "",
        cpu_features=frozenset(cpu.features),
        hypervisor_type=(status.hypervisor or Hypervisor()).type or "",
        usable_cpu_models=None if cpu.usable_models is None else frozenset(cpu.usable_models),
        capabilities=_capabilities(status),
        storage=_storage(status),
        pci_devices=tuple(
            PciDevice(address=d.address, alias=d.alias, numa_cell=d.numa_cell)
            for d in status.pci_devices
        ),
        images=frozenset(image.sha256 for image in status.images),
        shared_storage=spec.shared_storage.name if spec.shared_storage else None,
        cpu_set_errors=cpus.errors,
        host_networks=frozenset(spec.host_networks),
        network_mappings=frozenset(m.physical_network for m in spec.network_mappings),
        tunnel_endpoint=status.network.tunnel_endpoint if status.network else None,
        reserved_for=frozenset(spec.reserved_for),
    )


def _required_capabilities(vm: VirtualMachine) -> frozenset[Capability]:
    spec = vm.spec
    needed: set[Capability] = set()
    if spec.firmware is not None and spec.firmware.type == "uefi":
        needed.add(Capability.UEFI)
    if spec.firmware is not None and spec.firmware.secure_boot:
        needed.add(Capability.SECURE_BOOT)
    if spec.security is not None and spec.security.require_seccomp_sandbox:
        needed.add(Capability.SECCOMP_SANDBOX)
    if spec.security is not None and spec.security.require_confinement:
        needed.add(Capability.CONFINEMENT)
    return frozenset(needed)


def _shared_storage(vm: VirtualMachine) -> str | None:
    """The shared storage the VM's disks live in, as its agent last reported it."""
    storage = vm.status.storage if vm.status else None
    if storage is None or storage.location != "Shared":
        return None
    return storage.shared_storage


NO_NETWORKS: Mapping[str, NetworkSpec] = MappingProxyType({})


def _segments(
    vm: VirtualMachine, networks: Mapping[str, NetworkSpec]
) -> tuple[frozenset[str], bool]:
    """The physical networks of the provider Networks the VM's interfaces name, and
    whether one names an overlay. `networks` is keyed "namespace/name"; a Network missing
    from it asks nothing here (address allocation refuses the VM for it)."""
    namespace = objects.key(vm.metadata).split("/", 1)[0]
    physical: set[str] = set()
    overlay = False
    for interface in vm.spec.networks:
        found = networks.get(f"{namespace}/{interface.network}") if interface.network else None
        if found is not None and found.provider is not None:
            physical.add(found.provider.physical_network)
        overlay = overlay or (found is not None and found.type == "overlay")
    return frozenset(physical), overlay


def request(
    vm: VirtualMachine,
    *,
    networks: Mapping[str, NetworkSpec] = NO_NETWORKS,
    pool: NamespacePool | None = None,
) -> Request:
    """What a VirtualMachine asks placement for; `networks` ("namespace/name" -> spec) are
    the Networks its interfaces may name, `pool` its namespace's host pool."""
    spec = vm.spec
    physical_networks, overlay = _segments(vm, networks)
    memory = quantity.to_mib(spec.memory.size)
    cells: tuple[GuestCell, ...] = ()
    if spec.numa is not None:
        cells = tuple(
            GuestCell(id=i, vcpus=frozenset(cell.cpus), memory_mib=quantity.to_mib(cell.memory))
            for i, cell in enumerate(spec.numa.cells)
        )
    hugepages = spec.memory.hugepages
    placement = spec.placement
    group = None
    if placement is not None and placement.group:
        namespace = vm.metadata.get("namespace") or "default"
        group = ServerGroup(
            name=f"{namespace}/{placement.group}",
            policy=GroupPolicy(placement.policy or "anti-affinity"),
            max_per_host=placement.max_per_host or 1,
        )
    return Request(
        name=objects.key(vm.metadata),
        vcpus=spec.cpu.vcpus,
        memory_mib=memory,
        disk_mib=sum(_mib(disk.size) for disk in spec.disks),
        cpu_policy=CpuPolicy(spec.cpu.policy),
        thread_policy=ThreadPolicy(spec.cpu.thread_policy or "prefer"),
        isolate_emulator_thread=bool(spec.cpu.isolate_emulator_thread),
        numa_cells=cells,
        hugepage_kib=quantity.to_kib(hugepages.page_size) if hugepages else None,
        host_selector=dict(placement.host_selector or {}) if placement else {},
        group=group,
        cpu_features=frozenset(spec.cpu.features),
        hypervisor_types=spec.hypervisor.accepted if spec.hypervisor else frozenset(),
        features=hypervisors.requested(spec),
        cpu_mode=spec.cpu.model,
        capabilities=_required_capabilities(vm),
        pci=tuple(
            PciRequest(alias=r.alias, count=r.count)
            for r in (spec.devices.pci if spec.devices else [])
        ),
        images=frozenset(disk.source.sha256 for disk in spec.disks if disk.source),
        shared_storage=_shared_storage(vm),
        host_networks=tuple(
            sorted(
                {
                    (net.type, net.source)
                    for net in spec.networks
                    if net.source and not net.user_mode
                }
            )
        ),
        physical_networks=physical_networks,
        overlay=overlay,
        namespace_pool=pool,
    )


SIZING_FIELDS = ("cpu", "memory", "numa", "disks", "devices")
"""The spec parts a VM's claim is sized from (and checked against its host by)."""


def size_fingerprint(spec: VirtualMachineSpec) -> str:
    """A short hash of the spec's sizing parts: the controller records the one it claimed
    (status.placement.size) and the agent starts a domain only from a spec that has it."""
    # Defaults left out, as identity.hardware_fingerprint does: a new API field with a
    # default must not turn every bound VM into a pending resize after an upgrade.
    parts = spec.model_dump(
        mode="json", by_alias=True, include=set(SIZING_FIELDS), exclude_defaults=True
    )
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def claimed_size(vm: VirtualMachine) -> ClaimedSize:
    """The size record of a claim made for `vm`'s spec as it is now."""
    wanted = request(vm)
    return ClaimedSize(
        fingerprint=size_fingerprint(vm.spec),
        vcpus=wanted.vcpus,
        cpu_policy=wanted.cpu_policy.value,
        memory=quantity.format_bytes(wanted.memory_mib * quantity.MI),
        disk=quantity.format_bytes(wanted.disk_mib * quantity.MI) if wanted.disk_mib else None,
    )


def recorded_size(vm: VirtualMachine) -> ClaimedSize | None:
    """The size the controller last claimed for `vm` (None: bound before sizes were
    recorded, or not bound)."""
    placed = vm.status.placement if vm.status is not None else None
    return placed.size if placed is not None else None


def resize_pending(vm: VirtualMachine) -> bool:
    """Whether `vm`'s spec asks another size than the one claimed for it on its host."""
    size = recorded_size(vm)
    return size is not None and size.fingerprint != size_fingerprint(vm.spec)


def claimed_request(vm: VirtualMachine) -> Request:
    """`request(vm)` at the size its claim holds, which may predate its spec: a resize
    waits for a restart, and until then the old size is what runs."""
    wanted = request(vm)
    size = recorded_size(vm)
    if size is None:
        return wanted
    return dataclasses.replace(
        wanted,
        vcpus=size.vcpus,
        cpu_policy=CpuPolicy(size.cpu_policy),
        memory_mib=_mib(size.memory),
        disk_mib=_mib(size.disk),
    )


def claim(vm: VirtualMachine, host: HostSnapshot) -> Claim | None:
    """The claim a bound VM holds on `host`, rebuilt from its status (None while unbound):
    its placement, at the size status.placement.size records."""
    status = vm.status
    if status is None or status.host is None:
        return None
    wanted = claimed_request(vm)
    fit = _fit(wanted, status.placement, host)
    return scheduler.claim_for(wanted, host=status.host, fit=fit)


def _fit(wanted: Request, placed: PlacementStatus | None, host: HostSnapshot) -> NumaFit | None:
    """The NUMA fit and PCI devices `status.placement` records (None when it records
    neither). What the status leaves out is derived again from the host's topology:
    the siblings that thread policy `isolate` blocks, and the shared CPUs of a cell."""
    if placed is None or not (placed.cells or placed.pci_devices):
        return None
    by_id = {cell.id: cell for cell in host.numa_cells}
    isolate = wanted.thread_policy == ThreadPolicy.ISOLATE
    cells = [
        _cell_fit(wanted, cell, by_id.get(cell.host_cell), host.shared_cpus, isolate=isolate)
        for cell in placed.cells
    ]
    emulator = frozenset(placed.emulator_pins)
    head = by_id.get(cells[0].host_cell) if cells and emulator else None
    if head is not None and isolate:
        # The emulator thread's siblings are blocked like a vCPU's, on the first cell.
        cells[0] = dataclasses.replace(
            cells[0], blocked=cells[0].blocked | _siblings(head, emulator)
        )
    return NumaFit(
        cells=tuple(cells),
        emulator_pins=emulator,
        emulator_cell=cells[0].host_cell if cells and emulator else None,
        pci=tuple(PciClaim(alias=d.alias, address=d.address) for d in placed.pci_devices),
    )


def _cell_fit(
    wanted: Request,
    cell: CellPlacement,
    host_cell: NumaCell | None,
    shared_cpus: frozenset[int],
    *,
    isolate: bool,
) -> CellFit:
    pins = tuple(VcpuPin(p.vcpu, p.pcpu) for p in cell.vcpu_pins)
    pinned = frozenset(pin.pcpu for pin in pins)
    return CellFit(
        guest_cell=cell.guest_cell,
        host_cell=cell.host_cell,
        memory_mib=_mib(cell.memory),
        pins=pins,
        blocked=_siblings(host_cell, pinned) if isolate and host_cell is not None else frozenset(),
        shared_cpus=host_cell.cpus & shared_cpus
        if host_cell is not None and not pins
        else frozenset(),
        shared_vcpus=0 if pins else _guest_vcpus(wanted, cell.guest_cell),
        hugepage_kib=quantity.to_kib(cell.hugepages.page_size) if cell.hugepages else None,
        hugepages=cell.hugepages.count if cell.hugepages else 0,
    )


def _siblings(cell: NumaCell, cpus: frozenset[int]) -> frozenset[int]:
    """The other threads of the cores `cpus` run on."""
    return frozenset(t for core in cell.cores if cpus & set(core) for t in core) - cpus


def _guest_vcpus(wanted: Request, guest_cell: int) -> int:
    for cell in wanted.numa_cells:
        if cell.id == guest_cell:
            return len(cell.vcpus)
    return wanted.vcpus


def placement_status(
    fit: NumaFit | None, *, size: ClaimedSize | None = None
) -> PlacementStatus | None:
    """VM `status.placement` for a decision's NUMA fit and PCI devices and the size
    claimed (None for guests with none of them)."""
    if fit is None:
        return PlacementStatus(size=size) if size is not None else None
    cells = [
        CellPlacement(
            guest_cell=cell.guest_cell,
            host_cell=cell.host_cell,
            vcpu_pins=[ApiVcpuPin(vcpu=p.vcpu, pcpu=p.pcpu) for p in cell.pins],
            memory=quantity.format_bytes(cell.memory_mib * quantity.MI),
            hugepages=HugepageAllocation(
                page_size=quantity.format_bytes(cell.hugepage_kib * 1024), count=cell.hugepages
            )
            if cell.hugepage_kib
            else None,
        )
        for cell in fit.cells
    ]
    shared = sorted(set().union(*(cell.shared_cpus for cell in fit.cells)))
    return PlacementStatus(
        size=size,
        cells=cells,
        emulator_pins=sorted(fit.emulator_pins),
        shared_cpus=shared,
        pci_devices=[PciAssignment(alias=d.alias, address=d.address) for d in fit.pci],
    )


def as_bound(vm: VirtualMachine, host: str, placement: PlacementStatus | None) -> VirtualMachine:
    """`vm` as if it were bound to `host` with `placement`: what the target of a live
    migration renders and claims before the VM's status moves there."""
    status = vm.status or VirtualMachineStatus()
    moved = status.model_copy(update={"host": host, "placement": placement or PlacementStatus()})
    return vm.model_copy(update={"status": moved})


# -- from listings to a placement state ---------------------------------------------------------


def bound_claim(state: PlacementState, vm: VirtualMachine) -> Claim | None:
    """The claim `vm`'s status records on a host of `state`; None when its status names no
    host or one `state` does not know. `state.claim` refuses it (ClaimConflict) when it
    cannot be held as recorded: NUMA cells, CPUs or devices the host lacks or others hold."""
    host = vm.status.host if vm.status is not None else None
    if not host or host not in state:
        return None
    return claim(vm, state.host(host))


class Conflict(NamedTuple):
    """A bound VM's claim the state cannot hold, and why."""

    claim: Claim
    reason: str


class Unreadable(NamedTuple):
    """A bound VM whose claim could not even be built from its spec and status."""

    vm: str
    host: str
    reason: str


class Listing(NamedTuple):
    """A placement state rebuilt from listed hosts and VMs."""

    state: PlacementState
    conflicts: tuple[Conflict, ...]
    """Claims of bound VMs that cannot be held as their status records them."""
    unbound: tuple[VirtualMachine, ...]
    """VMs that hold no claim: their status names no host, or a host not listed."""
    unreadable: tuple[Unreadable, ...] = ()
    """Bound VMs whose claim raised while being built: they hold nothing."""


def state_from(
    hosts: Iterable[HostSnapshot],
    vms: Iterable[VirtualMachine],
    *,
    ratios: AllocationRatios,
    multipliers: Multipliers | None = None,
) -> Listing:
    """The placement state a listing gives: every host, and the claim of every bound VM
    in listing order (a later claim that conflicts with an earlier one is not held).

    The controller at start-up, `explain-placement --what-if` and `simulate` all build
    their state here, so they cannot disagree about what a cluster holds."""
    state = PlacementState(defaults=ratios, multipliers=multipliers)
    for host in hosts:
        state.add_host(host)
    conflicts: list[Conflict] = []
    unbound: list[VirtualMachine] = []
    unreadable: list[Unreadable] = []
    for vm in vms:
        try:
            wanted = bound_claim(state, vm)
        except Exception as error:
            # A value no model check caught: that VM's problem, never the whole listing's
            # (the controller could not start while such a VM existed).
            named = vm.status.host if vm.status is not None else None
            unreadable.append(Unreadable(objects.key(vm.metadata), named or "", repr(error)))
            continue
        if wanted is None:
            unbound.append(vm)
            continue
        try:
            state.claim(wanted)
        except ClaimConflict as refused:
            conflicts.append(Conflict(wanted, str(refused)))
    return Listing(state, tuple(conflicts), tuple(unbound), tuple(unreadable))
