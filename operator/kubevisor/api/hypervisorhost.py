"""The HypervisorHost custom resource: one hypervisor (a libvirt host or a vSphere
host) that its agent registered.

The cluster admin owns the spec (cordon, drain, allocation ratios, reserved resources,
CPU sets); the host's agent owns the status (what the hardware and hypervisor offer and
what is allocated). The placement engine reads both; the controller judges readiness.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from kubevisor.api import cpuset
from kubevisor.api.addresses import InterfaceName, IPv4Address
from kubevisor.api.conditions import Condition, conditions_field, observed_generation_field
from kubevisor.api.schema import (
    LIST_SET,
    MAX_URL_LENGTH,
    NO_CONTROL_CHARACTERS,
    ApiModel,
    ApiObject,
    CpuSet,
    DnsLabel,
    Matches,
    Message,
    ObjectName,
    PciAddress,
    PciId,
    Quantity,
    ShortText,
    UriText,
    cel_cpuset_ranges,
    cel_is_cpuset,
    list_map,
    rule,
    validations,
)

KIND: Final = "HypervisorHost"

# Nova's defaults (cpu_allocation_ratio, ram_allocation_ratio, disk_allocation_ratio)
# apply when a ratio is unset; the controller's settings may override them.
DEFAULT_CPU_RATIO = 4.0
DEFAULT_MEMORY_RATIO = 1.0
DEFAULT_DISK_RATIO = 1.0
# The largest ratio an admin may set. Nova's historical CPU default was 16 and real
# clouds stay well below 100 for any resource; the bound keeps (capacity - reserved) x
# ratio an exact, small number (1e308 overflowed to infinity and crashed the controller).
MAX_ALLOCATION_RATIO = 100.0

# Upper bounds of what a host reports, so that the API server's CEL cost estimate of the
# rules on its quantities stays small: a few dozen NUMA nodes is the most any machine
# has (Linux's own limit is 1024), and no architecture has more than a handful of huge
# page sizes (x86-64 two, arm64 four, ppc64 three).
MAX_HOST_NUMA_CELLS = 256
MAX_HUGEPAGE_SIZES = 16
# Linux numbers NUMA nodes below MAX_NUMNODES, at most 1024 (CONFIG_NODES_SHIFT=10).
MAX_NUMA_NODE_ID = 1023
# Threads per core: POWER's SMT8 is the most any CPU has; the bound leaves room.
MAX_SMT_SIBLINGS = 64
MAX_CPU_FEATURES = 1024
MAX_CPU_MODELS = 1024
MAX_PCI_PASSTHROUGH_DEVICES = 4096

# A host CPU number and a host NUMA node id, as the agent reports them.
HostCpuNumber = Annotated[int, Field(ge=0, le=cpuset.MAX_CPUS - 1)]
# A libvirt CPU model name (also VirtualMachine spec.cpu.model's bound).
CpuModelName = Annotated[str, StringConstraints(max_length=128)]
HostNumaCellId = Annotated[int, Field(ge=0, le=MAX_NUMA_NODE_ID)]

OVERLAP_MESSAGE = (
    "cpuDedicatedSet and cpuSharedSet must not overlap: a host CPU is either dedicated "
    "to one VM or shared by many"
)

HypervisorType = Literal["kvm", "qemu", "lxc", "vmware", "test"]
SecurityDriver = Literal["apparmor", "selinux", "none"]
# A host bridge or libvirt network name, as a VM's spec.networks[].source names it.
HostNetworkName = Annotated[
    str, StringConstraints(min_length=1, max_length=253), NO_CONTROL_CHARACTERS
]


class AllocationRatios(ApiModel):
    """Overcommit factors: a host offers capacity x ratio (minus reserved) to VMs."""

    cpu: float | None = Field(
        default=None,
        gt=0,
        le=MAX_ALLOCATION_RATIO,
        description=(
            "Virtual CPUs (shared policy) per host CPU, at most "
            f"{MAX_ALLOCATION_RATIO:g}. Unset: the cluster default, {DEFAULT_CPU_RATIO} as "
            "in Nova. Dedicated vCPUs never overcommit."
        ),
    )
    memory: float | None = Field(
        default=None,
        gt=0,
        le=MAX_ALLOCATION_RATIO,
        description=(
            f"Guest memory per byte of host memory, at most {MAX_ALLOCATION_RATIO:g}. "
            f"Unset: the cluster default, {DEFAULT_MEMORY_RATIO} as in Nova."
        ),
    )
    disk: float | None = Field(
        default=None,
        gt=0,
        le=MAX_ALLOCATION_RATIO,
        description=(
            f"Virtual disk size per byte of host disk, at most {MAX_ALLOCATION_RATIO:g}. "
            f"Unset: the cluster default, {DEFAULT_DISK_RATIO} as in Nova."
        ),
    )


class Reserved(ApiModel):
    """Resources kept back for the host itself, never offered to VMs."""

    cpu: int | None = Field(
        default=None, ge=0, le=cpuset.MAX_CPUS, description="Host CPUs reserved."
    )
    memory: Quantity | None = Field(default=None, description="Host memory reserved, e.g. 512Mi.")
    disk: Quantity | None = Field(default=None, description="Host disk reserved, e.g. 10Gi.")


class PciPassthroughRule(ApiModel):
    """Host PCI devices that may be passed through to VMs, and the alias VMs ask for them
    by (Nova's [pci] device_spec, formerly passthrough_whitelist, plus [pci] alias)."""

    vendor_id: PciId = Field(description="PCI vendor id, four lower-case hex digits (e.g. 8086).")
    product_id: PciId | None = Field(
        default=None,
        description=(
            "PCI product (device) id, four lower-case hex digits (e.g. 154c for an Intel "
            "X710 virtual function). Unset: every product of the vendor."
        ),
    )
    alias: DnsLabel = Field(
        description="Name VMs request matching devices by in spec.devices.pci[].alias.",
    )


class SharedStorage(ApiModel):
    """A directory this host shares with other hosts (an NFS or CephFS mount)."""

    name: DnsLabel = Field(
        description=(
            "Name of the shared filesystem: hosts declaring the same name see the same "
            "files at the same path, so VMs move between them without copying disks."
        )
    )
    path: Annotated[
        str, StringConstraints(pattern=r"^/.*$", max_length=4096), NO_CONTROL_CHARACTERS
    ] = Field(
        description="Absolute path where it is mounted on this host (the same on every host)."
    )


def _cel_last(range_: str) -> str:
    return f"int({range_}.split('-', 2)[size({range_}.split('-', 2)) - 1])"


def _cel_first(range_: str) -> str:
    return f"int({range_}.split('-', 2)[0])"


MAX_RESERVED_FOR = 256
"""Namespaces one host may be reserved for."""
MAX_HOST_NETWORKS = 64


class NetworkMapping(ApiModel):
    """Where a physical network leaves this host (Neutron's bridge_mappings)."""

    physical_network: DnsLabel = Field(
        description="Name of the physical network, as provider Networks name it.",
    )
    interface: InterfaceName = Field(
        description=(
            "This host's interface on it (a NIC or bond, e.g. eth1): the network's "
            "bridge enslaves it, or a VLAN sub-interface of it."
        ),
    )


class EvacuateRequest(ApiModel):
    """An operator's request to re-place every VM of this lost host now (`kubevisor
    evacuate`), without waiting for the failover grace."""

    requested_at: datetime = Field(
        alias="requestedAt",
        description=(
            "When it was requested: the controller acts on each request once, and records "
            "the outcome under the same time in status.evacuation (set a new time to ask "
            "again)."
        ),
    )
    confirmed_fenced: bool = Field(
        default=False,
        alias="confirmedFenced",
        description=(
            "The operator confirms the host is off (its guests stopped): the VMs move at "
            "once. Without it they move once the host's agent has fenced itself (its "
            "status.selfFence deadline plus the controller's margin after its last "
            "renewal), and not at all from a host whose agent does not fence itself."
        ),
    )


# Power fencing: where a host's BMC answers, and the Secret with its credentials.
BMC_URL_PATTERN: Final = r"^https?://[^\x00-\x20\x7f/?#@]+/?$"
BMC_URL_MESSAGE: Final = (
    "must be the BMC's base URL, http:// or https:// and a host (and port), without a path, "
    "e.g. https://10.0.0.5 or https://bmc-h1.example:8443"
)
BMC_HOST_PATTERN: Final = r"^[A-Za-z0-9]([-A-Za-z0-9.:]*[A-Za-z0-9])?$"
BMC_HOST_MESSAGE: Final = (
    "must be the BMC's host name or IP address, without a scheme or port, e.g. 10.0.0.5"
)
SYSTEM_ID_PATTERN: Final = r"^[^\x00-\x20\x7f/?#]+$"
SYSTEM_ID_MESSAGE: Final = (
    "must be the Id of a member of the BMC's /redfish/v1/Systems collection, e.g. 1 or "
    "System.Embedded.1, without slashes"
)
ONE_FENCING_MESSAGE: Final = "set exactly one of fencing.redfish and fencing.ipmi"
DEFAULT_IPMI_PORT: Final = 623

BmcUrl = Annotated[
    str,
    StringConstraints(min_length=8, max_length=MAX_URL_LENGTH),
    Matches(BMC_URL_PATTERN, BMC_URL_MESSAGE),
]
BmcHost = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253),
    Matches(BMC_HOST_PATTERN, BMC_HOST_MESSAGE),
]
SystemId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253),
    Matches(SYSTEM_ID_PATTERN, SYSTEM_ID_MESSAGE),
]
CREDENTIALS_DESCRIPTION: Final = (
    "Name of a Secret in the controller's namespace (kubevisor-system) holding the BMC "
    "account under the keys username and password. The controller reads it when it fences."
)


class RedfishFencing(ApiModel):
    """A BMC speaking Redfish (iDRAC, iLO, XClarity, OpenBMC...), driven through sushy."""

    address: BmcUrl = Field(
        description="The BMC's base URL, e.g. https://10.0.0.5 (the Redfish service root "
        "is /redfish/v1 below it)."
    )
    system_id: SystemId | None = Field(
        default=None,
        alias="systemId",
        description=(
            "The Id of this host's member of the BMC's Systems collection (e.g. 1, "
            "System.Embedded.1). Unset: the collection's only member (refused as a fence "
            "failure when it has several)."
        ),
    )
    credentials_secret: ObjectName = Field(
        alias="credentialsSecret", description=CREDENTIALS_DESCRIPTION
    )
    insecure_skip_tls_verify: bool = Field(
        default=False,
        alias="insecureSkipTLSVerify",
        description=(
            "Accept any certificate from an https BMC (many ship self-signed ones). "
            "Default: verify it against the controller's trusted CAs."
        ),
    )


class IpmiFencing(ApiModel):
    """A BMC speaking IPMI over LAN (lanplus, RMCP+), driven through pyghmi."""

    address: BmcHost = Field(description="The BMC's host name or IP address.")
    port: int = Field(
        default=DEFAULT_IPMI_PORT, ge=1, le=65535, description="Its RMCP+ UDP port (623)."
    )
    credentials_secret: ObjectName = Field(
        alias="credentialsSecret", description=CREDENTIALS_DESCRIPTION
    )


class Fencing(ApiModel):
    """How the controller powers this host off before starting its VMs elsewhere."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule("has(self.redfish) != has(self.ipmi)", ONE_FENCING_MESSAGE),
        )
    )

    redfish: RedfishFencing | None = Field(default=None, description="A Redfish BMC.")
    ipmi: IpmiFencing | None = Field(default=None, description="An IPMI BMC.")

    @model_validator(mode="after")
    def _one(self) -> Fencing:
        if (self.redfish is None) == (self.ipmi is None):
            raise ValueError(ONE_FENCING_MESSAGE)
        return self


class HypervisorHostSpec(ApiModel):
    """Admin settings of a hypervisor host."""

    # The model does not mirror this rule: a host stored before it (or written around
    # it) must still be read, so that the controller can mark it unschedulable with the
    # CPUs in both sets (core.placement.cpusets, reason InvalidCpuSets).
    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.cpuDedicatedSet) || !has(self.cpuSharedSet)"
                f" || !{cel_is_cpuset('self.cpuDedicatedSet')}"
                f" || !{cel_is_cpuset('self.cpuSharedSet')}"
                f" || {cel_cpuset_ranges('self.cpuDedicatedSet')}.all(a,"
                f" {cel_cpuset_ranges('self.cpuSharedSet')}.all(b,"
                f" {_cel_first('a')} > {_cel_last('b')} || {_cel_first('b')} > {_cel_last('a')}))",
                OVERLAP_MESSAGE,
                field_path=".cpuSharedSet",
            ),
        )
    )

    unschedulable: bool = Field(
        default=False,
        description="Cordon: place no new VMs here; running VMs stay.",
    )
    maintenance: bool = Field(
        default=False,
        description=(
            "Drain: place no new VMs here and move the running ones away according to "
            "their evictionStrategy."
        ),
    )
    evacuate: EvacuateRequest | None = Field(
        default=None,
        description=(
            "Re-place every VM of this host now, for a lost host only (refused while it is "
            "Ready): `kubevisor evacuate HOST [--confirm-fenced]` sets it."
        ),
    )
    fencing: Fencing | None = Field(
        default=None,
        description=(
            "Power fencing: once this host is lost (its heartbeat expired), the controller "
            "powers it off through its BMC and, once the BMC reports power Off, starts its "
            "VMs elsewhere at once, without the failover grace. A fence that fails blocks "
            "their failover (condition FencingFailed) until one succeeds or an operator "
            "confirms the host is off (kubevisor evacuate --confirm-fenced). Unset: the "
            "grace and the agent's self-fencing."
        ),
    )
    allocation_ratios: AllocationRatios | None = Field(
        default=None,
        description="Overcommit ratios; unset ones use the cluster defaults.",
    )
    reserved: Reserved | None = Field(
        default=None,
        description="CPU, memory and disk kept back for the host.",
    )
    cpu_dedicated_set: CpuSet | None = Field(
        default=None,
        description=(
            "Host CPUs for VMs with policy dedicated, in cpuset syntax ('4-15,20'); "
            "Nova's cpu_dedicated_set. Unset: no dedicated CPUs."
        ),
    )
    cpu_shared_set: CpuSet | None = Field(
        default=None,
        description=(
            "Host CPUs shared VMs float over, in cpuset syntax ('0-3'); Nova's "
            "cpu_shared_set. Unset: all CPUs not in cpuDedicatedSet."
        ),
    )
    pci_passthrough: list[PciPassthroughRule] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "PCI devices (including SR-IOV virtual functions) the agent offers for "
            "passthrough, by vendor and product id, each under an alias; the agent "
            "reports the matching devices in status.pciDevices. Empty: none."
        ),
    )
    shared_storage: SharedStorage | None = Field(
        default=None,
        description=(
            "Shared storage for the disks of VMs created here: they migrate without "
            "copying disks and restart elsewhere with their data after a host failure. "
            "Unset: VM disks stay on the host's local disk."
        ),
    )
    network_mappings: list[NetworkMapping] = Field(
        default_factory=list,
        max_length=MAX_HOST_NETWORKS,
        description=(
            "The physical networks this host is attached to and through which interface; "
            "VMs on a provider Network go only to hosts mapping its physical network."
        ),
        json_schema_extra=list_map("physicalNetwork"),
    )
    host_networks: list[HostNetworkName] = Field(
        default_factory=list,
        max_length=MAX_HOST_NETWORKS,
        description=(
            "Host bridges and libvirt networks VMs may name directly "
            "(spec.networks[].type bridge or network with source); VMs naming any other "
            "are not placed here. Empty: none (VMs use Networks)."
        ),
        json_schema_extra=LIST_SET,
    )
    reserved_for: list[DnsLabel] = Field(
        default_factory=list,
        max_length=MAX_RESERVED_FOR,
        description=(
            "The only namespaces whose VMs this host takes (a host reserved for teams); "
            "VMs already running here stay. Empty: any namespace's."
        ),
        json_schema_extra=LIST_SET,
    )


class Hypervisor(ApiModel):
    """The hypervisor the agent's libvirt connection drives."""

    type: HypervisorType | None = Field(
        default=None,
        description="kvm (hardware virtualisation), qemu (TCG emulation), lxc, vmware or test.",
    )
    version: ShortText | None = Field(default=None, description="Hypervisor version, e.g. 7.2.0.")
    libvirt_version: ShortText | None = Field(
        default=None, description="libvirt version, e.g. 9.0.0."
    )
    message: Message | None = Field(
        default=None,
        description=(
            "Why the agent does not use a faster type the host offers, e.g. KVM unusable "
            "here (a broken /dev/kvm, or a nested host), so guests run on TCG (type qemu)."
        ),
    )


class HostCpu(ApiModel):
    """The host's CPU as libvirt reports it."""

    model: CpuModelName | None = Field(
        default=None, description="CPU model name, e.g. Skylake-Server-IBRS."
    )
    vendor: ShortText | None = Field(default=None, description="CPU vendor, e.g. Intel or AMD.")
    features: list[ShortText] = Field(
        default_factory=list, max_length=MAX_CPU_FEATURES, description="CPU feature flags."
    )
    sockets: int | None = Field(default=None, ge=0, le=cpuset.MAX_CPUS, description="Sockets.")
    cores: int | None = Field(
        default=None, ge=0, le=cpuset.MAX_CPUS, description="Cores per socket."
    )
    threads: int | None = Field(
        default=None, ge=0, le=MAX_SMT_SIBLINGS, description="Threads per core."
    )
    usable_models: list[CpuModelName] | None = Field(
        default=None,
        max_length=MAX_CPU_MODELS,
        description=(
            "Named guest CPU models (a VirtualMachine's spec.cpu.model other than "
            "host-passthrough and host-model) libvirt marks usable for the domain type the "
            "agent runs (kvm or qemu), from its domain capabilities. Placement sends a VM "
            "asking for a named model only to hosts listing it; unset when the hypervisor "
            "cannot say, and then placement does not check."
        ),
    )


class Resources(ApiModel):
    """An amount of CPU, memory and disk."""

    cpu: int | None = Field(
        default=None, ge=0, description="CPUs (host CPUs or vCPUs, see the parent field)."
    )
    memory: Quantity | None = Field(default=None, description="Memory, e.g. 64Gi.")
    disk: Quantity | None = Field(
        default=None, description="Disk in the image directory, e.g. 500Gi."
    )


class Capacity(Resources):
    """A host's physical totals: as `Resources`, with CPUs bounded by what Linux can number,
    so an absurd report is refused by the API server rather than expanded by placement."""

    cpu: int | None = Field(
        default=None, ge=0, le=cpuset.MAX_CPUS, description="Host CPUs (logical)."
    )


class HostHugepages(ApiModel):
    """Huge pages of one size on one host NUMA cell."""

    page_size: Quantity = Field(description="Page size, e.g. 2Mi or 1Gi.")
    total: int = Field(ge=0, description="Pages configured.")
    free: int = Field(ge=0, description="Pages free.")


class HostNumaCell(ApiModel):
    """One NUMA cell of the host."""

    id: HostNumaCellId = Field(description="NUMA cell id.")
    cpus: list[HostCpuNumber] = Field(
        default_factory=list,
        max_length=cpuset.MAX_CPUS,
        description="Host CPU numbers in the cell.",
    )
    siblings: list[Annotated[list[HostCpuNumber], Field(max_length=MAX_SMT_SIBLINGS)]] = Field(
        default_factory=list,
        max_length=cpuset.MAX_CPUS,
        description="SMT sibling sets: host CPUs sharing one core.",
    )
    memory: Quantity | None = Field(default=None, description="Memory of the cell.")
    hugepages: list[HostHugepages] = Field(
        default_factory=list,
        max_length=MAX_HUGEPAGE_SIZES,
        description="Huge pages per page size.",
    )


class PciDevice(ApiModel):
    """One host PCI device matching spec.pciPassthrough, as the agent found it."""

    address: PciAddress = Field(
        description="PCI address, domain:bus:slot.function, e.g. 0000:3b:02.1.",
    )
    vendor_id: PciId = Field(description="PCI vendor id, e.g. 8086.")
    product_id: PciId = Field(description="PCI product id, e.g. 154c.")
    numa_cell: HostNumaCellId | None = Field(
        default=None,
        description="Host NUMA cell the device is attached to; unset when the host has none.",
    )
    alias: DnsLabel = Field(description="Alias of the spec.pciPassthrough rule it matches.")


class Ksm(ApiModel):
    """Kernel Samepage Merging: identical guest memory pages shared across VMs."""

    running: bool = Field(description="Whether ksmd runs (/sys/kernel/mm/ksm/run is 1).")
    pages_shared: int | None = Field(
        default=None,
        ge=0,
        description="Shared pages in use (/sys/kernel/mm/ksm/pages_shared).",
    )
    pages_sharing: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Sites sharing them (/sys/kernel/mm/ksm/pages_sharing): how many pages of "
            "memory KSM saves, roughly."
        ),
    )


class HostCapabilities(ApiModel):
    """Hypervisor features VMs may need, for placement filters and the domain XML."""

    uefi: bool | None = Field(
        default=None,
        description="OVMF UEFI firmware is installed (Debian package ovmf).",
    )
    secure_boot: bool | None = Field(
        default=None,
        description="OVMF with Secure Boot and enrolled-keys variable templates is installed.",
    )
    vhost_net: bool | None = Field(
        default=None,
        description="/dev/vhost-net exists: virtio NICs use the in-kernel vhost backend.",
    )
    security_driver: SecurityDriver | None = Field(
        default=None,
        description=(
            "libvirt's security driver for QEMU, from the secmodels of libvirt's "
            "capabilities: apparmor, selinux, or none (libvirt confines QEMU by DAC only, "
            'e.g. qemu.conf security_driver = "none").'
        ),
    )
    seccomp_sandbox: bool | None = Field(
        default=None,
        description=(
            "QEMU runs under a seccomp sandbox (qemu.conf seccomp_sandbox). libvirt does "
            "not report this setting through its API: the agent reads the host's qemu.conf "
            "when given it (--qemu-conf); unset means unknown, and VMs with "
            "security.requireSeccompSandbox are not placed here."
        ),
    )
    cgroup_controllers: list[ShortText] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "cgroup controllers libvirt can use for VMs (cpu, cpuset, memory, blkio, ...), "
            "as the agent is told (--cgroup-controllers) or reads in the host's qemu.conf "
            "(cgroup_controllers); empty when none or unknown (qemu.conf leaves the choice "
            "to libvirt). Without cpu, spec.cpu.tune limits are not enforced on this host."
        ),
    )


class HostStorage(ApiModel):
    """The filesystem holding the VMs' disk overlays, as the host reports it."""

    capacity: Quantity | None = Field(
        default=None, description="Size of the filesystem (statvfs), e.g. 500Gi."
    )
    available: Quantity | None = Field(
        default=None,
        description="Real free space (statvfs): what thin overlays can still grow into.",
    )
    provisioned: Quantity | None = Field(
        default=None,
        description=(
            "Sum of the virtual sizes of the VMs' disks here: what the disk allocation "
            "ratio is measured against."
        ),
    )
    used: Quantity | None = Field(
        default=None,
        description="Sum of the real sizes of the VMs' disk overlays here.",
    )
    image_cache: Quantity | None = Field(
        default=None,
        description="Real size of the host's image cache (downloaded base images).",
    )
    shared: SharedStorageStatus | None = Field(
        default=None, description="The declared shared storage, as this host sees it."
    )


class SharedStorageStatus(ApiModel):
    """The host's shared storage (spec.sharedStorage) as its agent finds it."""

    name: DnsLabel = Field(description="spec.sharedStorage.name.")
    path: Annotated[str, StringConstraints(max_length=4096)] = Field(
        description="spec.sharedStorage.path."
    )
    capacity: Quantity | None = Field(default=None, description="Size of the filesystem.")
    available: Quantity | None = Field(default=None, description="Free space on it.")


class CachedImage(ApiModel):
    """One base image in the host's image cache."""

    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$", max_length=64)] = Field(
        description="Digest of the downloaded file: the image's identity in VM specs."
    )
    size: Quantity = Field(description="Size of the cached (decompressed) file.")
    last_used: datetime | None = Field(
        default=None, description="When a VM last used it (eviction goes by this age)."
    )
    in_use: int = Field(default=0, ge=0, description="VM disks on this host backed by it.")
    shared: bool = Field(
        default=False, description="Cached in the shared storage rather than on the host."
    )


DrainPhase = Literal["Draining", "Drained", "Blocked"]


class DrainStatus(ApiModel):
    """How far emptying the host for maintenance got (controller-written)."""

    phase: DrainPhase = Field(
        description="Draining, Drained (no VM left) or Blocked (a VM cannot leave)."
    )
    remaining: int = Field(ge=0, description="VMs still bound to the host.")
    migrating: int = Field(default=0, ge=0, description="Of those, live-migrating away now.")
    stopping: int = Field(default=0, ge=0, description="Of those, shutting down to move cold.")
    blocked: int = Field(default=0, ge=0, description="Of those, unable to leave.")
    message: str | None = Field(default=None, description="Which VMs block it, and why.")


EvacuationOutcome = Literal["Waiting", "Evacuated", "Refused"]


class EvacuationStatus(ApiModel):
    """What became of the last spec.evacuate request (controller-written)."""

    requested_at: datetime = Field(alias="requestedAt", description="The request's time.")
    outcome: EvacuationOutcome = Field(
        description="Waiting (for the agent's self-fencing), Evacuated, or Refused."
    )
    message: Message = Field(description="Why, and how the VMs' old copies were stopped.")
    time: datetime | None = Field(default=None, description="When the controller decided.")


class HostNetworkStatus(ApiModel):
    """The host's side of the VM networks, as its agent reports it."""

    tunnel_endpoint: IPv4Address | None = Field(
        default=None,
        description=(
            "This host's IPv4 address on the underlay (agent flag --tunnel-ip): overlay "
            "Networks' VXLAN traffic goes to and from it. Unset: the host takes no VMs on "
            "overlay Networks."
        ),
    )


class SelfFenceStatus(ApiModel):
    """The agent's self-fencing, which the controller's failover waits for."""

    deadline_seconds: int = Field(
        alias="deadlineSeconds",
        ge=1,
        le=86400,
        description=(
            "Seconds after its last Lease renewal the agent destroys its guests when it "
            "cannot renew (agent flag --self-fence-after). The controller starts this "
            "host's VMs elsewhere no sooner than this plus its margin after that renewal."
        ),
    )


class HypervisorHostStatus(ApiModel):
    """What the host offers and carries, written by its agent."""

    hypervisor: Hypervisor | None = Field(default=None, description="Hypervisor type and versions.")
    libvirt_uri: UriText | None = Field(
        default=None,
        alias="libvirtURI",
        description="libvirt URI the agent uses, e.g. qemu:///system.",
    )
    console_endpoint: UriText | None = Field(
        default=None,
        alias="consoleEndpoint",
        description="URL of the agent's serial console endpoint (mTLS, for kubevisor-api "
        "only); unset when the agent serves none.",
    )
    metrics_endpoint: UriText | None = Field(
        default=None,
        alias="metricsEndpoint",
        description="URL of the agent's Prometheus /metrics, with the per-VM usage "
        "`kubevisor top` reads; unset when the agent serves none.",
    )
    self_fence: SelfFenceStatus | None = Field(
        default=None,
        alias="selfFence",
        description="The agent's self-fencing deadline; unset: the agent does not fence itself.",
    )
    cpu: HostCpu | None = Field(default=None, description="CPU model, vendor, features, topology.")
    capacity: Capacity | None = Field(
        default=None,
        description="Physical totals: host CPUs, memory, disk.",
    )
    numa_cells: list[HostNumaCell] = Field(
        default_factory=list,
        max_length=MAX_HOST_NUMA_CELLS,
        description="Host NUMA topology with free huge pages.",
    )
    allocatable: Resources | None = Field(
        default=None,
        description="(capacity - reserved) x allocation ratio: what VMs may use (cpu in vCPUs).",
    )
    allocated: Resources | None = Field(
        default=None,
        description="Sum of the VMs bound here (cpu in vCPUs).",
    )
    vm_count: int | None = Field(default=None, ge=0, description="VMs bound to this host.")
    drain: DrainStatus | None = Field(
        default=None, description="Progress of emptying the host while spec.maintenance is true."
    )
    capabilities: HostCapabilities | None = Field(
        default=None,
        description="UEFI, Secure Boot, vhost-net, security driver, seccomp, cgroups.",
    )
    storage: HostStorage | None = Field(
        default=None,
        description="Real and provisioned space of the filesystem holding VM disks.",
    )
    ksm: Ksm | None = Field(
        default=None,
        description="Kernel Samepage Merging state and savings.",
    )
    pci_devices: list[PciDevice] = Field(
        default_factory=list,
        max_length=MAX_PCI_PASSTHROUGH_DEVICES,
        description="Devices matching spec.pciPassthrough, with their NUMA cells.",
    )
    images: list[CachedImage] = Field(
        default_factory=list,
        max_length=1024,
        description=(
            "Base images in the host's image cache; placement prefers hosts that have a "
            "VM's images. Unused ones are evicted by size and age."
        ),
    )
    network: HostNetworkStatus | None = Field(
        default=None,
        description="The host's tunnel endpoint for overlay Networks.",
    )
    evacuation: EvacuationStatus | None = Field(
        default=None, description="The outcome of the last spec.evacuate request."
    )
    last_fenced: datetime | None = Field(
        default=None,
        alias="lastFenced",
        description=(
            "When the host's guests were last known stopped while it was lost: its BMC "
            "confirmed it powered off (spec.fencing), its agent's self-fence deadline after "
            "its last renewal, or an evacuation confirmed by hand (condition Fenced)."
        ),
    )
    conditions: list[Condition] = conditions_field(
        "Ready (agent heartbeat fresh), Schedulable (Ready, not cordoned or draining), "
        "Fenced (a lost host's guests known stopped, and how) and, with spec.fencing, "
        "FencingFailed (the last power-off through the BMC failed, and why)."
    )
    observed_generation: int | None = observed_generation_field()


class HypervisorHost(ApiObject):
    """A whole HypervisorHost object, for reading manifests and watch events."""

    kind: Literal["HypervisorHost"] = Field(default=KIND, description="HypervisorHost.")
    spec: HypervisorHostSpec = Field(
        default_factory=HypervisorHostSpec, description="Admin settings."
    )
    status: HypervisorHostStatus | None = Field(default=None, description="Observed state.")
