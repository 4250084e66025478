"""From the CRDs to placement values, and from decisions back to VM status.

The controller and the what-if simulator call these with the pydantic models of
`kubevisor.api` (parse raw objects with `HypervisorHost.model_validate(...)` first).
Sizes go through `kubevisor.api.quantity`, CPU lists through `kubevisor.api.cpuset`.
Server groups are namespaced: group "db" in namespace "prod" is `prod/db`.
"""

from __future__ import annotations

from kubevisor.api import cpuset, objects, quantity
from kubevisor.api.conditions import find
from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.virtualmachine import (
    CellPlacement,
    HugepageAllocation,
    PciAssignment,
    PlacementStatus,
    VirtualMachine,
)
from kubevisor.api.virtualmachine import VcpuPin as ApiVcpuPin
from kubevisor.core import hypervisors
from kubevisor.core.placement.model import (
    Capability,
    CellFit,
    Claim,
    CpuPolicy,
    GroupPolicy,
    GuestCell,
    HostSnapshot,
    Hugepages,
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


def _mib(text: str | None) -> int:
    return quantity.to_mib(text) if text else 0


def _capabilities(host: HypervisorHost) -> frozenset[Capability]:
    """The capabilities a host reports; unknown (None) counts as absent."""
    caps = host.status.capabilities if host.status else None
    if caps is None:
        return frozenset()
    offered = {
        Capability.UEFI: caps.uefi,
        Capability.SECURE_BOOT: caps.secure_boot,
        Capability.SECCOMP_SANDBOX: caps.seccomp_sandbox,
        Capability.CONFINEMENT: caps.security_driver not in (None, "none"),
    }
    return frozenset(name for name, present in offered.items() if present)


def _storage(host: HypervisorHost) -> Storage | None:
    reported = host.status.storage if host.status else None
    if reported is None or not reported.capacity or reported.available is None:
        return None
    return Storage(
        total_mib=_mib(reported.capacity),
        available_mib=_mib(reported.available),
        overlays_mib=_mib(reported.used),
        provisioned_mib=_mib(reported.provisioned),
    )


def host_snapshot(host: HypervisorHost) -> HostSnapshot:
    """A HypervisorHost as placement sees it. With neither CPU set given, every CPU is
    shared; with either given, CPUs in neither set are reserved (Nova's rule)."""
    spec, status = host.spec, host.status
    cells: list[NumaCell] = []
    capacity = status.capacity if status else None
    if status is not None:
        for cell in status.numa_cells:
            cells.append(
                NumaCell(
                    id=cell.id,
                    cpus=frozenset(cell.cpus),
                    memory_mib=_mib(cell.memory),
                    siblings=tuple(frozenset(group) for group in cell.siblings),
                    hugepages=tuple(
                        Hugepages(
                            page_kib=quantity.to_kib(pool.page_size),
                            total=pool.total,
                            free=pool.free,
                        )
                        for pool in cell.hugepages
                    ),
                )
            )
    every = frozenset(cpu for cell in cells for cpu in cell.cpus)
    vcpus = (capacity.cpu if capacity and capacity.cpu else None) or len(every)
    if not every:
        every = frozenset(range(vcpus))
    dedicated = cpuset.parse(spec.cpu_dedicated_set) if spec.cpu_dedicated_set else frozenset()
    if spec.cpu_shared_set:
        shared = cpuset.parse(spec.cpu_shared_set)
    else:
        shared = frozenset() if spec.cpu_dedicated_set else every
    memory = _mib(capacity.memory if capacity else None) or sum(c.memory_mib for c in cells)
    ratios = spec.allocation_ratios
    reserved = spec.reserved
    ready = False
    cpu = status.cpu if status else None
    if status is not None:
        condition = find(status.conditions, "Ready")
        ready = condition is not None and condition.status == "True"
    meta = host.metadata
    return HostSnapshot(
        name=str(meta.get("name", "")),
        vcpus=vcpus,
        memory_mib=memory,
        disk_mib=_mib(capacity.disk if capacity else None),
        shared_cpus=shared - dedicated,
        dedicated_cpus=dedicated,
        reserved_vcpus=(reserved.cpu or 0) if reserved else 0,
        reserved_memory_mib=_mib(reserved.memory) if reserved else 0,
        reserved_disk_mib=_mib(reserved.disk) if reserved else 0,
        ratios=RatioOverrides(cpu=ratios.cpu, memory=ratios.memory, disk=ratios.disk)
        if ratios
        else RatioOverrides(),
        labels=dict(meta.get("labels") or {}),
        schedulable=not spec.unschedulable,
        maintenance=spec.maintenance,
        ready=ready,
        numa_cells=tuple(cells),
        cpu_model=(cpu.model or "") if cpu else "",
        cpu_vendor=(cpu.vendor or "") if cpu else "",
        cpu_features=frozenset(cpu.features) if cpu else frozenset(),
        hypervisor_type=(status.hypervisor.type or "") if status and status.hypervisor else "",
        usable_cpu_models=frozenset(cpu.usable_models)
        if cpu and cpu.usable_models is not None
        else None,
        capabilities=_capabilities(host),
        storage=_storage(host),
        pci_devices=tuple(
            PciDevice(address=d.address, alias=d.alias, numa_cell=d.numa_cell)
            for d in (status.pci_devices if status else [])
        ),
        images=frozenset(image.sha256 for image in (status.images if status else [])),
        shared_storage=spec.shared_storage.name if spec.shared_storage else None,
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


def request(vm: VirtualMachine) -> Request:
    """What a VirtualMachine asks placement for."""
    spec = vm.spec
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
    )


def claim(vm: VirtualMachine, host: HostSnapshot) -> Claim | None:
    """The claim a bound VM holds, rebuilt from its status (None while unbound).

    Siblings blocked by thread policy `isolate` are not in the status; they are derived
    again from the host's topology.
    """
    status = vm.status
    if status is None or status.host is None:
        return None
    wanted = request(vm)
    fit: NumaFit | None = None
    placed = status.placement
    devices = tuple(
        PciClaim(alias=d.alias, address=d.address) for d in (placed.pci_devices if placed else [])
    )
    if placed is not None and (placed.cells or devices):
        by_id = {cell.id: cell for cell in host.numa_cells}
        cells = []
        for cell in placed.cells:
            pins = tuple(VcpuPin(p.vcpu, p.pcpu) for p in cell.vcpu_pins)
            blocked: frozenset[int] = frozenset()
            if wanted.thread_policy == ThreadPolicy.ISOLATE and cell.host_cell in by_id:
                pinned = {p.pcpu for p in pins}
                blocked = (
                    frozenset(
                        t
                        for core in by_id[cell.host_cell].cores
                        if pinned & set(core)
                        for t in core
                    )
                    - pinned
                )
            host_cell = by_id.get(cell.host_cell)
            shared = (
                host_cell.cpus & host.shared_cpus
                if host_cell is not None and not pins
                else frozenset()
            )
            cells.append(
                CellFit(
                    guest_cell=cell.guest_cell,
                    host_cell=cell.host_cell,
                    memory_mib=_mib(cell.memory),
                    pins=pins,
                    blocked=blocked,
                    shared_cpus=shared,
                    shared_vcpus=0 if pins else _guest_vcpus(wanted, cell.guest_cell),
                    hugepage_kib=quantity.to_kib(cell.hugepages.page_size)
                    if cell.hugepages
                    else None,
                    hugepages=cell.hugepages.count if cell.hugepages else 0,
                )
            )
        emulator = frozenset(placed.emulator_pins)
        if emulator and wanted.thread_policy == ThreadPolicy.ISOLATE and cells:
            head = by_id.get(cells[0].host_cell)
            if head is not None:
                extra = (
                    frozenset(t for core in head.cores if emulator & set(core) for t in core)
                    - emulator
                )
                cells[0] = CellFit(
                    **{
                        f: getattr(cells[0], f)
                        for f in CellFit.__dataclass_fields__
                        if f != "blocked"
                    },
                    blocked=cells[0].blocked | extra,
                )
        fit = NumaFit(
            cells=tuple(cells),
            emulator_pins=emulator,
            emulator_cell=cells[0].host_cell if emulator else None,
            pci=devices,
        )
    return Claim(
        vm=wanted.name,
        host=status.host,
        vcpus=0 if wanted.dedicated else wanted.vcpus,
        pcpus=len(fit.pcpus) if fit is not None else 0,
        memory_mib=wanted.memory_mib,
        disk_mib=wanted.disk_mib,
        numa=fit,
        group=wanted.group,
    )


def _guest_vcpus(wanted: Request, guest_cell: int) -> int:
    for cell in wanted.numa_cells:
        if cell.id == guest_cell:
            return len(cell.vcpus)
    return wanted.vcpus


def placement_status(fit: NumaFit | None) -> PlacementStatus | None:
    """VM `status.placement` for a decision's NUMA fit and PCI devices (None for guests
    with neither)."""
    if fit is None:
        return None
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
        cells=cells,
        emulator_pins=sorted(fit.emulator_pins),
        shared_cpus=shared,
        pci_devices=[PciAssignment(alias=d.alias, address=d.address) for d in fit.pci],
    )
