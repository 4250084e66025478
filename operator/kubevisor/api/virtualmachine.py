"""The VirtualMachine custom resource: what a user asks for (spec) and what runs (status).

Users and GitOps tools write the spec; the controller's placement writes `status.host`
and `status.placement`, the agent of the bound host writes `status.domain` and the phase
after binding (DESIGN.md section 3). Field docs here become the CRD's descriptions and
so what `kubectl explain virtualmachine` prints; the CEL rules attached to the models are
enforced by the API server itself.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from kubevisor.api import quantity
from kubevisor.api.conditions import Condition, conditions_field
from kubevisor.api.schema import (
    API_VERSION,
    LIST_SET,
    ApiModel,
    DnsLabel,
    ObjectName,
    PositiveQuantity,
    Quantity,
    list_map,
    rule,
    validations,
)

KIND: Final = "VirtualMachine"
PLURAL = "virtualmachines"

# Upper bounds keep the API server's CEL cost estimate small (and match what one
# libvirt domain can reasonably be given).
MAX_VCPUS = 256
MAX_NUMA_CELLS = 8

RunStrategy = Literal["Always", "RerunOnFailure", "Once", "Manual", "Halted"]
CpuPolicy = Literal["shared", "dedicated"]
ThreadPolicy = Literal["prefer", "isolate", "require"]
HugepageSize = Literal["2Mi", "1Gi"]
DiskBus = Literal["virtio", "sata", "scsi"]
NetworkType = Literal["user", "network", "bridge"]
NicModel = Literal["virtio", "e1000", "e1000e", "rtl8139"]
GroupPolicy = Literal["anti-affinity", "affinity", "soft-anti-affinity", "soft-affinity"]
EvictionStrategy = Literal["LiveMigrate", "Shutdown", "None"]
Phase = Literal[
    "Pending",
    "Unschedulable",
    "Scheduled",
    "Starting",
    "Running",
    "Paused",
    "Stopping",
    "Stopped",
    "Migrating",
    "Failed",
    "Terminating",
    "Unknown",
]

CpuCount = Annotated[int, Field(ge=1, le=MAX_VCPUS)]
VcpuIndex = Annotated[int, Field(ge=0, le=MAX_VCPUS - 1)]


class Cpu(ApiModel):
    """Virtual CPUs of the guest: how many, their topology, and whether they get
    dedicated host CPUs (pinning, as Nova's hw:cpu_policy) or float over shared ones."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.threadPolicy) || self.policy == 'dedicated'",
                "threadPolicy is only allowed with policy: dedicated",
                field_path=".threadPolicy",
            ),
            rule(
                "!has(self.isolateEmulatorThread) || !self.isolateEmulatorThread"
                " || self.policy == 'dedicated'",
                "isolateEmulatorThread is only allowed with policy: dedicated",
                field_path=".isolateEmulatorThread",
            ),
            rule(
                "!(has(self.sockets) || has(self.cores) || has(self.threads))"
                " || (has(self.sockets) ? self.sockets : 1)"
                " * (has(self.cores) ? self.cores : 1)"
                " * (has(self.threads) ? self.threads : 1) == self.vcpus",
                "sockets x cores x threads (unset ones count as 1) must equal vcpus",
                field_path=".vcpus",
            ),
        )
    )

    vcpus: CpuCount = Field(
        default=1,
        description=f"Number of virtual CPUs (1..{MAX_VCPUS}).",
    )
    sockets: CpuCount | None = Field(
        default=None,
        description=(
            "CPU sockets the guest sees. If any of sockets, cores, threads is set, "
            "sockets x cores x threads must equal vcpus (unset ones count as 1)."
        ),
    )
    cores: CpuCount | None = Field(
        default=None,
        description="Cores per socket the guest sees; see sockets.",
    )
    threads: CpuCount | None = Field(
        default=None,
        description="Threads per core the guest sees; see sockets.",
    )
    policy: CpuPolicy = Field(
        default="shared",
        description=(
            "shared: vCPUs float over the host's shared CPUs and count against its CPU "
            "allocation ratio. dedicated: each vCPU is pinned to its own host CPU from the "
            "host's cpuDedicatedSet (Nova's hw:cpu_policy)."
        ),
    )
    thread_policy: ThreadPolicy | None = Field(
        default=None,
        description=(
            "How dedicated vCPUs use host SMT siblings (Nova's hw:cpu_thread_policy): "
            "prefer siblings, isolate (keep the other siblings of each core unused) or "
            "require hosts with SMT. Only with policy: dedicated."
        ),
    )
    isolate_emulator_thread: bool | None = Field(
        default=None,
        description=(
            "Pin QEMU's emulator threads to one extra dedicated host CPU instead of the "
            "vCPUs' CPUs (Nova's hw:emulator_threads_policy=isolate). Only with policy: "
            "dedicated."
        ),
    )
    model: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None,
        description=(
            "Guest CPU model: host-passthrough, host-model, or a named libvirt model such "
            "as Skylake-Server. Unset: the agent picks what the host's hypervisor supports."
        ),
    )
    features: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "CPU feature flags the guest requires (e.g. vmx, avx2); hosts lacking one are "
            "filtered out."
        ),
        json_schema_extra=LIST_SET,
    )

    # The model validators below mirror the CEL rules of their class, so example files
    # and unit tests catch the same mistakes without an API server.
    @model_validator(mode="after")
    def _dedicated_only_options(self) -> Cpu:
        if self.policy != "dedicated":
            if self.thread_policy is not None:
                raise ValueError("threadPolicy is only allowed with policy: dedicated")
            if self.isolate_emulator_thread:
                raise ValueError("isolateEmulatorThread is only allowed with policy: dedicated")
        topology = (self.sockets, self.cores, self.threads)
        if any(topology) and math.prod(n or 1 for n in topology) != self.vcpus:
            raise ValueError("sockets x cores x threads (unset ones count as 1) must equal vcpus")
        return self


class Hugepages(ApiModel):
    """Back guest memory with host huge pages of one size."""

    page_size: HugepageSize = Field(
        description="Huge page size: 2Mi or 1Gi. The VM's memory size must be a multiple of it.",
    )


class Memory(ApiModel):
    """Guest memory."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.hugepages) || !isQuantity(self.size)"
                " || !quantity(self.size).isInteger()"
                " || quantity(self.size).asInteger()"
                " % quantity(self.hugepages.pageSize).asInteger() == 0",
                "size must be a multiple of hugepages.pageSize",
                field_path=".size",
            ),
        )
    )

    size: PositiveQuantity = Field(
        description="Guest memory as a quantity greater than zero, e.g. 128Mi or 4Gi.",
    )
    hugepages: Hugepages | None = Field(
        default=None,
        description="Back the guest memory with host huge pages; unset uses normal pages.",
    )

    @model_validator(mode="after")
    def _whole_pages(self) -> Memory:
        if self.hugepages is not None:
            size = quantity.parse(self.size)
            if size % quantity.parse(self.hugepages.page_size) != 0:
                raise ValueError("size must be a multiple of hugepages.pageSize")
        return self


class NumaCell(ApiModel):
    """One guest NUMA cell: which vCPUs and how much memory it holds."""

    cpus: list[VcpuIndex] = Field(
        min_length=1,
        max_length=MAX_VCPUS,
        description="vCPU indexes (0..vcpus-1) of this cell; each vCPU in exactly one cell.",
        json_schema_extra=LIST_SET,
    )
    memory: PositiveQuantity = Field(
        description="Guest memory of this cell; the cells' memory adds up to memory.size.",
    )


class Numa(ApiModel):
    """Guest NUMA topology (Nova's hw:numa_nodes with explicit hw:numa_cpus/mem). Each
    guest cell is placed on one host NUMA cell."""

    cells: list[NumaCell] = Field(
        min_length=1,
        max_length=MAX_NUMA_CELLS,
        description=(
            f"Guest NUMA cells (1..{MAX_NUMA_CELLS}). Their cpus partition 0..vcpus-1 "
            "and their memory adds up to memory.size."
        ),
    )


class Disk(ApiModel):
    """One block device of the guest, created from a base image, blank, or both resized."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule("has(self.image) || has(self.size)", "a disk needs an image, a size or both"),
        )
    )

    name: DnsLabel = Field(description="Name of the disk, unique in the VM (a DNS label).")
    image: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=255)]
        | None
    ) = Field(
        default=None,
        description=(
            "Base image file name in the host's image directory; the disk is a "
            "copy-on-write overlay on it. Unset: a blank disk of the given size."
        ),
    )
    size: PositiveQuantity | None = Field(
        default=None,
        description="Virtual size of the disk (e.g. 10Gi); unset keeps the image's size.",
    )
    bus: DiskBus = Field(
        default="virtio",
        description="Bus the guest sees the disk on: virtio (fastest), sata or scsi.",
    )
    read_only: bool | None = Field(
        default=None,
        description="Attach the disk read-only.",
    )

    @model_validator(mode="after")
    def _has_content(self) -> Disk:
        if self.image is None and self.size is None:
            raise ValueError("a disk needs an image, a size or both")
        return self


class Boot(ApiModel):
    """Direct kernel boot: start the guest from a kernel and initrd on the host instead
    of a disk's boot loader. Paths are absolute paths on the hypervisor host."""

    kernel: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None,
        description="Absolute path of the kernel image on the host.",
    )
    initrd: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None,
        description="Absolute path of the initrd/initramfs on the host.",
    )
    cmdline: Annotated[str, StringConstraints(max_length=4096)] | None = Field(
        default=None,
        description="Kernel command line, e.g. 'console=ttyS0'.",
    )


class CloudInit(ApiModel):
    """cloud-init NoCloud data handed to the guest on a config drive."""

    user_data: Annotated[str, StringConstraints(max_length=65536)] | None = Field(
        default=None,
        description="cloud-init user-data (e.g. a #cloud-config document).",
    )
    meta_data: Annotated[str, StringConstraints(max_length=65536)] | None = Field(
        default=None,
        description="cloud-init meta-data; unset: instance-id and hostname from the VM's name.",
    )
    network_config: Annotated[str, StringConstraints(max_length=65536)] | None = Field(
        default=None,
        description="cloud-init network-config (version 1 or 2).",
    )


class Network(ApiModel):
    """One network interface of the guest."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "self.type == 'user' || has(self.source)",
                "source is required for type network and bridge",
                field_path=".source",
            ),
        )
    )

    name: DnsLabel = Field(description="Name of the interface, unique in the VM (a DNS label).")
    type: NetworkType = Field(
        default="user",
        description=(
            "user: QEMU user-mode networking (NAT, no setup on the host); network: a "
            "libvirt network named by source; bridge: a host bridge named by source."
        ),
    )
    source: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = Field(
        default=None,
        description="Libvirt network name (type network) or host bridge name (type bridge).",
    )
    model: NicModel = Field(
        default="virtio",
        description="NIC model the guest sees: virtio, e1000, e1000e or rtl8139.",
    )
    multiqueue: bool | None = Field(
        default=None,
        description="One queue per vCPU (virtio only), for network throughput.",
    )

    @model_validator(mode="after")
    def _has_source(self) -> Network:
        if self.type != "user" and self.source is None:
            raise ValueError("source is required for type network and bridge")
        return self


class Placement(ApiModel):
    """Where the VM may run: host labels and server-group rules (Nova's server groups)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.policy) || has(self.group)",
                "policy requires group",
                field_path=".group",
            ),
            rule(
                "!has(self.maxPerHost) || (has(self.policy) && self.policy == 'anti-affinity')",
                "maxPerHost is only allowed with policy: anti-affinity",
                field_path=".maxPerHost",
            ),
        )
    )

    host_selector: dict[str, Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        default=None,
        description="Only hosts whose HypervisorHost labels include all of these.",
    )
    group: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = Field(
        default=None,
        description=(
            "Server group this VM belongs to: VMs of one namespace with the same group "
            "are placed together by policy."
        ),
    )
    policy: GroupPolicy | None = Field(
        default=None,
        description=(
            "Group policy: anti-affinity (never on a host with another member, or at "
            "most maxPerHost), affinity (all on one host), soft-anti-affinity / "
            "soft-affinity (preferences weighed, never refusals). Requires group."
        ),
    )
    max_per_host: int | None = Field(
        default=None,
        ge=1,
        description=(
            "With policy anti-affinity: at most this many members of the group on one "
            "host (Nova's max_server_per_host), default 1."
        ),
    )

    @model_validator(mode="after")
    def _group_rules(self) -> Placement:
        if self.policy is not None and self.group is None:
            raise ValueError("policy requires group")
        if self.max_per_host is not None and self.policy != "anti-affinity":
            raise ValueError("maxPerHost is only allowed with policy: anti-affinity")
        return self


class VirtualMachineSpec(ApiModel):
    """Desired state of a virtual machine."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.numa) || self.numa.cells.map(c, size(c.cpus)).sum() == self.cpu.vcpus",
                "the NUMA cells' cpus must add up to cpu.vcpus",
                field_path=".numa.cells",
            ),
            rule(
                "!has(self.numa)"
                " || self.numa.cells.all(c, c.cpus.all(i, i < self.cpu.vcpus"
                " && self.numa.cells.filter(d, i in d.cpus).size() == 1))",
                "each vCPU index must be below cpu.vcpus and appear in exactly one NUMA cell",
                field_path=".numa.cells",
            ),
            rule(
                "!has(self.numa)"
                " || !(isQuantity(self.memory.size) && quantity(self.memory.size).isInteger()"
                " && self.numa.cells.all(c,"
                " isQuantity(c.memory) && quantity(c.memory).isInteger()))"
                " || self.numa.cells.map(c, quantity(c.memory).asInteger()).sum()"
                " == quantity(self.memory.size).asInteger()",
                "the NUMA cells' memory must add up to memory.size",
                field_path=".numa.cells",
            ),
        )
    )

    run_strategy: RunStrategy = Field(
        default="Always",
        description=(
            "When the VM should run (KubeVirt's run strategies): Always (restart whenever "
            "it stops), RerunOnFailure (restart only after a failure), Once (run to "
            "completion, never restart), Manual (start/stop only by command), Halted "
            "(keep stopped)."
        ),
    )
    cpu: Cpu = Field(
        default_factory=Cpu,
        description="Virtual CPUs: count, topology, shared or dedicated (pinned).",
        json_schema_extra={"default": {}},
    )
    memory: Memory = Field(description="Guest memory: size and optional huge pages.")
    numa: Numa | None = Field(
        default=None,
        description=(
            "Guest NUMA topology; unset: one cell, placed on one host NUMA cell when dedicated."
        ),
    )
    disks: list[Disk] = Field(
        default_factory=list,
        max_length=32,
        description="Block devices, in boot order; names unique.",
        json_schema_extra=list_map("name"),
    )
    boot: Boot | None = Field(
        default=None,
        description=(
            "Direct kernel boot; unset boots from the first disk (or the agent's default kernel)."
        ),
    )
    cloud_init: CloudInit | None = Field(
        default=None,
        description="cloud-init NoCloud data; unset attaches no config drive.",
    )
    networks: list[Network] = Field(
        default_factory=list,
        max_length=16,
        description="Network interfaces; names unique.",
        json_schema_extra=list_map("name"),
    )
    placement: Placement | None = Field(
        default=None,
        description="Host selection: labels and server-group policy.",
    )
    eviction_strategy: EvictionStrategy = Field(
        default="LiveMigrate",
        description=(
            "What happens when the host is drained (maintenance): LiveMigrate to another "
            "host, Shutdown (stop here, start elsewhere per runStrategy) or None (block "
            "the drain)."
        ),
    )
    paused: bool = Field(
        default=False,
        description="Pause the guest's vCPUs while keeping its memory (libvirt suspend).",
    )

    @model_validator(mode="after")
    def _names_unique(self) -> VirtualMachineSpec:
        for what, names in (
            ("disks", [disk.name for disk in self.disks]),
            ("networks", [network.name for network in self.networks]),
        ):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} names must be unique")
        return self

    @model_validator(mode="after")
    def _numa_matches(self) -> VirtualMachineSpec:
        if self.numa is None:
            return self
        indexes = [i for cell in self.numa.cells for i in cell.cpus]
        if sorted(indexes) != list(range(self.cpu.vcpus)):
            raise ValueError("numa.cells cpus must partition 0..cpu.vcpus-1")
        memory = sum(quantity.parse(cell.memory) for cell in self.numa.cells)
        if memory != quantity.parse(self.memory.size):
            raise ValueError("numa.cells memory must add up to memory.size")
        return self


# ---- status ------------------------------------------------------------------------


class VcpuPin(ApiModel):
    """One vCPU pinned to one host CPU."""

    vcpu: int = Field(ge=0, description="Guest vCPU index.")
    pcpu: int = Field(ge=0, description="Host CPU number it runs on.")


class HugepageAllocation(ApiModel):
    """Huge pages taken from one host NUMA cell."""

    page_size: Quantity = Field(description="Huge page size, e.g. 2Mi.")
    count: int = Field(ge=0, description="Number of pages.")


class CellPlacement(ApiModel):
    """Where one guest NUMA cell landed on the host."""

    guest_cell: int = Field(ge=0, description="Guest NUMA cell index.")
    host_cell: int = Field(ge=0, description="Host NUMA cell it is placed on.")
    vcpu_pins: list[VcpuPin] = Field(
        default_factory=list,
        description="vCPU to host CPU pins (dedicated policy only).",
    )
    memory: Quantity | None = Field(
        default=None, description="Guest memory taken from this host cell."
    )
    hugepages: HugepageAllocation | None = Field(
        default=None,
        description="Huge pages taken from this host cell, if the VM uses huge pages.",
    )


class PlacementStatus(ApiModel):
    """The placement decision the agent turns into domain XML (cpu pinning, numatune)."""

    cells: list[CellPlacement] = Field(
        default_factory=list,
        description="One entry per guest NUMA cell.",
    )
    emulator_pins: list[int] = Field(
        default_factory=list,
        description="Host CPUs for QEMU's emulator threads (isolateEmulatorThread).",
    )
    shared_cpus: list[int] = Field(
        default_factory=list,
        description="Host CPUs the vCPUs float over (shared policy): the host's cpuSharedSet.",
    )


class DomainStatus(ApiModel):
    """The libvirt domain backing the VM, as its agent last saw it."""

    uuid: str | None = Field(default=None, description="libvirt domain UUID.")
    state: str | None = Field(
        default=None,
        description=(
            "libvirt domain state in lower case: nostate, running, blocked, paused, "
            "shutdown, shutoff, crashed, pmsuspended."
        ),
    )
    reason: str | None = Field(
        default=None,
        description="libvirt's reason for the state, e.g. booted, user, migrated, destroyed.",
    )


class LastMigration(ApiModel):
    """The most recent completed live migration of this VM."""

    job: str | None = Field(default=None, description="Name of the MigrationJob.")
    source: str | None = Field(default=None, description="Host the VM left.")
    target: str | None = Field(default=None, description="Host the VM moved to.")
    completion_time: datetime | None = Field(default=None, description="When it completed.")


class VirtualMachineStatus(ApiModel):
    """Observed state of a virtual machine."""

    phase: Phase | None = Field(
        default=None,
        description=(
            "One-word lifecycle summary: Pending, Unschedulable, Scheduled, Starting, "
            "Running, Paused, Stopping, Stopped, Migrating, Failed, Terminating, Unknown."
        ),
    )
    host: ObjectName | None = Field(
        default=None,
        description="HypervisorHost the VM is bound to (set by placement).",
    )
    placement: PlacementStatus | None = Field(
        default=None,
        description="NUMA cells, CPU pins and huge pages chosen on the host.",
    )
    domain: DomainStatus | None = Field(
        default=None,
        description="The libvirt domain, as the host's agent last saw it.",
    )
    created: bool | None = Field(
        default=None,
        description="True while a libvirt domain for this VM exists on its host.",
    )
    conditions: list[Condition] = conditions_field(
        "Ready, Scheduled, Migrating, Paused, and Reconciling/Stalled as kstatus reads them."
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the spec this status reflects.",
    )
    restart_count: int | None = Field(
        default=None,
        ge=0,
        description="How many times the guest was restarted by its runStrategy.",
    )
    last_migration: LastMigration | None = Field(
        default=None,
        description="The most recent completed live migration.",
    )


class VirtualMachine(ApiModel):
    """A whole VirtualMachine object, for reading manifests and watch events."""

    api_version: Literal["kubevisor.io/v1alpha1"] = Field(
        default=API_VERSION, description="kubevisor.io/v1alpha1."
    )
    kind: Literal["VirtualMachine"] = Field(default=KIND, description="VirtualMachine.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Object metadata.")
    spec: VirtualMachineSpec = Field(description="Desired state.")
    status: VirtualMachineStatus | None = Field(default=None, description="Observed state.")
