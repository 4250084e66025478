"""Frozen values the placement engine reads and returns.

Hosts and requests come in (built by `placement.inputs` from the CRDs, or directly by
tests); decisions, NUMA fits, claims and rejections go out. Units: memory and disk in
MiB, hugepage sizes in KiB (as the kernel reports them), CPUs as host CPU ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from kubevisor.core.hypervisors import Feature

EMPTY_LABELS: Mapping[str, str] = MappingProxyType({})


class CpuPolicy(StrEnum):
    SHARED = "shared"
    DEDICATED = "dedicated"


class ThreadPolicy(StrEnum):
    PREFER = "prefer"
    ISOLATE = "isolate"
    REQUIRE = "require"


class GroupPolicy(StrEnum):
    AFFINITY = "affinity"
    ANTI_AFFINITY = "anti-affinity"
    SOFT_AFFINITY = "soft-affinity"
    SOFT_ANTI_AFFINITY = "soft-anti-affinity"


@dataclass(frozen=True, slots=True)
class Hugepages:
    """Hugepages of one size on one host NUMA cell (`free` is as the agent last saw it,
    pages used outside kubevisor included; `NumaCell.hugepages_free` reads both)."""

    page_kib: int
    total: int
    free: int


@dataclass(frozen=True, slots=True)
class NumaCell:
    """One host NUMA cell: its CPUs, SMT sibling groups, memory and hugepage pools."""

    id: int
    cpus: frozenset[int]
    memory_mib: int
    siblings: tuple[frozenset[int], ...] = ()
    hugepages: tuple[Hugepages, ...] = ()
    cores: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Physical cores as sorted thread tuples (CPUs without siblings are cores of
        # their own), derived once: NUMA fitting reads them on every candidate host.
        seen: set[int] = set()
        cores: list[tuple[int, ...]] = []
        for group in self.siblings:
            threads = tuple(sorted(group & self.cpus))
            if threads and not seen.intersection(threads):
                cores.append(threads)
                seen.update(threads)
        cores.extend((cpu,) for cpu in sorted(self.cpus - seen))
        object.__setattr__(self, "cores", tuple(cores))

    def hugepage_total(self, page_kib: int) -> int:
        return sum(pool.total for pool in self.hugepages if pool.page_kib == page_kib)

    def hugepages_free(self, page_kib: int, claimed: int) -> int:
        """Pages of `page_kib` placement may still hand out here, `claimed` being held by
        claims: what the claims leave of the total, and never more than the agent last
        saw free. Pages in use outside kubevisor count as used; so, until the agent's next
        report, do pages of guests just deleted (the safe side). Claims of guests that
        have not started yet are not double-counted: the smaller figure wins, not the sum.
        """
        free = sum(pool.free for pool in self.hugepages if pool.page_kib == page_kib)
        return max(min(self.hugepage_total(page_kib) - claimed, free), 0)


class Capability(StrEnum):
    """Host features a VM may require (from HypervisorHost status.capabilities)."""

    UEFI = "uefi"
    SECURE_BOOT = "secure-boot"
    SECCOMP_SANDBOX = "seccomp-sandbox"
    CONFINEMENT = "confinement"


@dataclass(frozen=True, slots=True)
class Storage:
    """The filesystem holding the VMs' thin overlays, as the host last reported it.

    `overlays_mib` is the real size the overlays take now; `provisioned_mib` the sum of
    their virtual sizes (what they may grow to).
    """

    total_mib: int
    available_mib: int
    overlays_mib: int = 0
    provisioned_mib: int = 0


@dataclass(frozen=True, slots=True)
class PciDevice:
    """One host PCI device offered for passthrough under `alias` (None: no NUMA cell)."""

    address: str
    alias: str
    numa_cell: int | None = None


@dataclass(frozen=True, slots=True)
class PciRequest:
    """`count` devices of the host devices offered under `alias`."""

    alias: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class PciClaim:
    """One specific host device taken for one alias of a request."""

    alias: str
    address: str


@dataclass(frozen=True, slots=True)
class RatioOverrides:
    """Per-host allocation ratios; None means "use the cluster default"."""

    cpu: float | None = None
    memory: float | None = None
    disk: float | None = None


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    """What placement knows about one hypervisor host at one moment.

    `dedicated_cpus` and `shared_cpus` are already resolved (see `placement.inputs`):
    dedicated CPUs back pinned guests (PCPU), shared CPUs back floating ones (VCPU).
    `vcpus` is the host's logical CPU count; CPUs in neither set are reserved.
    `usable_cpu_models` are the named guest CPU models the host can run; None when the
    host does not say (an older agent, or a hypervisor without domain capabilities).
    `images` are the sha256 digests in the host's image cache; `shared_storage` is the
    name of the shared filesystem the host mounts for VM disks (None: local disks only).
    No VM gets more vCPUs than `vcpus`, whatever the ratio and sets say.
    """

    name: str
    vcpus: int
    memory_mib: int
    disk_mib: int
    shared_cpus: frozenset[int]
    dedicated_cpus: frozenset[int] = frozenset()
    reserved_vcpus: int = 0
    reserved_memory_mib: int = 0
    reserved_disk_mib: int = 0
    ratios: RatioOverrides = RatioOverrides()
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS, hash=False)
    schedulable: bool = True
    maintenance: bool = False
    ready: bool = True
    numa_cells: tuple[NumaCell, ...] = ()
    cpu_model: str = ""
    cpu_vendor: str = ""
    cpu_features: frozenset[str] = frozenset()
    hypervisor_type: str = ""
    usable_cpu_models: frozenset[str] | None = None
    capabilities: frozenset[Capability] = frozenset()
    storage: Storage | None = None
    pci_devices: tuple[PciDevice, ...] = ()
    images: frozenset[str] = frozenset()
    shared_storage: str | None = None
    cpu_set_errors: tuple[str, ...] = ()
    """What is wrong with the admin's CPU sets against the host's CPUs
    (`placement.cpusets`); a host with any takes no VM."""
    host_networks: frozenset[str] = frozenset()
    """Host bridges and libvirt networks the admin lets VMs name (spec.hostNetworks)."""
    network_mappings: frozenset[str] = frozenset()
    """Physical networks the host is attached to (spec.networkMappings)."""
    tunnel_endpoint: str | None = None
    """The host's underlay address for overlay Networks (status.network.tunnelEndpoint)."""
    reserved_for: frozenset[str] = frozenset()
    """The only namespaces whose VMs the host takes (spec.reservedFor; empty: any)."""

    @property
    def has_smt(self) -> bool:
        return any(len(group) > 1 for cell in self.numa_cells for group in cell.siblings)


@dataclass(frozen=True, slots=True)
class GuestCell:
    """One guest NUMA cell: which guest vCPUs and how much memory it holds."""

    id: int
    vcpus: frozenset[int]
    memory_mib: int


@dataclass(frozen=True, slots=True)
class ServerGroup:
    name: str
    policy: GroupPolicy
    max_per_host: int = 1


@dataclass(frozen=True, slots=True)
class NamespacePool:
    """The host pool of one namespace (`placement.pools`): `selector`, labels every host
    must carry, or `invalid`, why its annotation cannot be read (then no host qualifies)."""

    namespace: str
    selector: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS, hash=False)
    invalid: str | None = None

    @property
    def text(self) -> str:
        """The selector as the annotation writes it ("pool=team-a,zone=z1")."""
        return ",".join(f"{key}={value}" for key, value in sorted(self.selector.items()))


@dataclass(frozen=True, slots=True)
class Request:
    """One VM asking for a host. `name` is the VM's key (namespace/name).

    A request is NUMA-aware when it names guest cells, asks for dedicated CPUs or asks
    for hugepages (Nova's `numa_get_constraints`); see `placement.numa.guest_cells`.
    `required_cpu_model` and `cpu_features` constrain the CPU.
    `hypervisor_types` are the host types the VM may run on (empty: any; a migration
    requires its source's type) and `features` what its spec asks of the hypervisor
    (`core.hypervisors.requested`), which the host's type must support.
    `cpu_mode` is the VM's spec.cpu.model: a host-passthrough guest that already holds a
    claim (it runs somewhere) may only go to a host with the very same CPU, and a named
    model (`named_cpu_model`) only to hosts that can run it.
    `capabilities` are host features the VM cannot run without; `pci` the passthrough
    devices it asks for by alias.
    `images` are the sha256 digests of its disks' source images, and `shared_storage` the
    shared filesystem its disks already live in (a VM placed again after its host was
    lost): hosts that have them are preferred, never required.
    `host_networks` are the host bridges and libvirt networks it names.
    """

    name: str
    vcpus: int
    memory_mib: int
    disk_mib: int = 0
    cpu_policy: CpuPolicy = CpuPolicy.SHARED
    thread_policy: ThreadPolicy = ThreadPolicy.PREFER
    isolate_emulator_thread: bool = False
    numa_cells: tuple[GuestCell, ...] = ()
    hugepage_kib: int | None = None
    host_selector: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS, hash=False)
    group: ServerGroup | None = None
    required_cpu_model: str | None = None
    cpu_features: frozenset[str] = frozenset()
    hypervisor_types: frozenset[str] = frozenset()
    features: frozenset[Feature] = frozenset()
    exclude_hosts: frozenset[str] = frozenset()
    cpu_mode: str | None = None
    capabilities: frozenset[Capability] = frozenset()
    pci: tuple[PciRequest, ...] = ()
    images: frozenset[str] = frozenset()
    shared_storage: str | None = None
    host_networks: tuple[tuple[str, str], ...] = ()
    """(type, name) of each host bridge or libvirt network the VM names directly
    (spec.networks[].source): only hosts offering every one of them qualify."""
    physical_networks: frozenset[str] = frozenset()
    """Physical networks of the provider Networks its interfaces are on: only hosts
    mapping every one of them qualify."""
    overlay: bool = False
    """An interface is on an overlay Network: only hosts with a tunnel endpoint qualify."""
    namespace_pool: NamespacePool | None = None
    """The host pool of the VM's namespace (`placement.pools`; None: any host)."""

    @property
    def dedicated(self) -> bool:
        return self.cpu_policy == CpuPolicy.DEDICATED

    @property
    def named_cpu_model(self) -> str | None:
        """The libvirt CPU model the guest asks for by name (`<cpu mode='custom'>`), or
        None for host-passthrough, host-model and no model at all."""
        if self.cpu_mode in (None, "host-passthrough", "host-model"):
            return None
        return self.cpu_mode

    @property
    def numa_aware(self) -> bool:
        return bool(self.numa_cells) or self.dedicated or self.hugepage_kib is not None

    @property
    def pcpus(self) -> int:
        """Dedicated host CPUs asked for at least (thread policy `isolate` may block more)."""
        if not self.dedicated:
            return 0
        return self.vcpus + (1 if self.isolate_emulator_thread else 0)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one host cannot take one request.

    `filter` names the filter; `summary` is the phrase hosts are counted under in an
    explanation ("insufficient memory"); `reason` is the full sentence for this host.
    `need` and `free` (in `unit`, see `placement.units`) let an explanation say "need 8Gi,
    best has 6Gi free"; `has` says what `free` measures: "free" (what is left now), "in
    all" (the most one VM may take there, e.g. the host's CPUs, whatever is left), "free on
    one cell" (NUMA fitting: the best single host cell).
    """

    filter: str
    summary: str
    reason: str
    need: int | None = None
    free: int | None = None
    unit: str = ""
    has: str = "free"


@dataclass(frozen=True, slots=True)
class VcpuPin:
    vcpu: int
    pcpu: int


@dataclass(frozen=True, slots=True)
class CellFit:
    """Where one guest cell landed.

    `pins` is empty for shared-CPU guests, whose vCPUs float over `shared_cpus` of the
    host cell. `blocked` are pCPUs nobody else may use (siblings under `isolate`).
    """

    guest_cell: int
    host_cell: int
    memory_mib: int
    pins: tuple[VcpuPin, ...] = ()
    blocked: frozenset[int] = frozenset()
    shared_cpus: frozenset[int] = frozenset()
    shared_vcpus: int = 0
    hugepage_kib: int | None = None
    hugepages: int = 0

    @property
    def pinned(self) -> frozenset[int]:
        return frozenset(pin.pcpu for pin in self.pins)


@dataclass(frozen=True, slots=True)
class NumaFit:
    """A request's guest cells mapped to host cells, with pins and emulator pins, and the
    host PCI devices claimed for it (NUMA-local to `cells` first).

    A request that is not NUMA-aware but asks for PCI devices gets a fit with no cells
    and only `pci`.
    """

    cells: tuple[CellFit, ...]
    emulator_pins: frozenset[int] = frozenset()
    emulator_cell: int | None = None
    pci: tuple[PciClaim, ...] = ()

    @property
    def pcpus(self) -> frozenset[int]:
        """Every dedicated pCPU this fit takes away from others."""
        taken: set[int] = set(self.emulator_pins)
        for cell in self.cells:
            taken |= cell.pinned
            taken |= cell.blocked
        return frozenset(taken)


@dataclass(frozen=True, slots=True)
class Claim:
    """Resources one VM holds on one host; claims are what the placement state sums."""

    vm: str
    host: str
    vcpus: int = 0
    pcpus: int = 0
    memory_mib: int = 0
    disk_mib: int = 0
    numa: NumaFit | None = None
    group: ServerGroup | None = None


@dataclass(frozen=True, slots=True)
class CellUsage:
    """What claims hold on one host NUMA cell.

    `pinned` counts every dedicated pCPU taken (pins, blocked siblings, emulator pins);
    `shared_vcpus` and `memory_mib` count NUMA-aware guests only, as Nova's cell usage does;
    `hugepages` is (page KiB, pages used) pairs.
    """

    pinned: frozenset[int] = frozenset()
    shared_vcpus: int = 0
    memory_mib: int = 0
    hugepages: tuple[tuple[int, int], ...] = ()

    def hugepages_used(self, page_kib: int) -> int:
        for size, count in self.hugepages:
            if size == page_kib:
                return count
        return 0


@dataclass(frozen=True, slots=True)
class HostUsage:
    """What claims hold on one host; `cells` follows the host's `numa_cells` order."""

    vcpus: int = 0
    pcpus: int = 0
    memory_mib: int = 0
    disk_mib: int = 0
    vms: int = 0
    cells: tuple[CellUsage, ...] = ()
    pci: frozenset[str] = frozenset()
    """Addresses of the host PCI devices claimed."""
