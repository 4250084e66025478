"""The HypervisorHost custom resource: one libvirt hypervisor the agent registered.

The cluster admin owns the spec (cordon, drain, allocation ratios, reserved resources,
CPU sets); the host's agent owns the status (what the hardware and hypervisor offer and
what is allocated). The placement engine reads both; the controller judges readiness.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field

from kubevisor.api.conditions import Condition, conditions_field
from kubevisor.api.schema import API_VERSION, ApiModel, CpuSet, Quantity

KIND: Final = "HypervisorHost"
PLURAL = "hypervisorhosts"

# Nova's defaults (cpu_allocation_ratio, ram_allocation_ratio, disk_allocation_ratio)
# apply when a ratio is unset; the controller's settings may override them.
DEFAULT_CPU_RATIO = 4.0
DEFAULT_MEMORY_RATIO = 1.0
DEFAULT_DISK_RATIO = 1.0

HypervisorType = Literal["kvm", "qemu", "lxc", "vmware", "test"]


class AllocationRatios(ApiModel):
    """Overcommit factors: a host offers capacity x ratio (minus reserved) to VMs."""

    cpu: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Virtual CPUs (shared policy) per host CPU. Unset: the cluster default, "
            f"{DEFAULT_CPU_RATIO} as in Nova. Dedicated vCPUs never overcommit."
        ),
    )
    memory: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Guest memory per byte of host memory. Unset: the cluster default, "
            f"{DEFAULT_MEMORY_RATIO} as in Nova."
        ),
    )
    disk: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Virtual disk size per byte of host disk. Unset: the cluster default, "
            f"{DEFAULT_DISK_RATIO} as in Nova."
        ),
    )


class Reserved(ApiModel):
    """Resources kept back for the host itself, never offered to VMs."""

    cpu: int | None = Field(default=None, ge=0, description="Host CPUs reserved.")
    memory: Quantity | None = Field(default=None, description="Host memory reserved, e.g. 512Mi.")
    disk: Quantity | None = Field(default=None, description="Host disk reserved, e.g. 10Gi.")


class HypervisorHostSpec(ApiModel):
    """Admin settings of a hypervisor host."""

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


class Hypervisor(ApiModel):
    """The hypervisor the agent's libvirt connection drives."""

    type: HypervisorType | None = Field(
        default=None,
        description="kvm (hardware virtualisation), qemu (TCG emulation), lxc, vmware or test.",
    )
    version: str | None = Field(default=None, description="Hypervisor version, e.g. 7.2.0.")
    libvirt_version: str | None = Field(default=None, description="libvirt version, e.g. 9.0.0.")


class HostCpu(ApiModel):
    """The host's CPU as libvirt reports it."""

    model: str | None = Field(default=None, description="CPU model name, e.g. Skylake-Server-IBRS.")
    vendor: str | None = Field(default=None, description="CPU vendor, e.g. Intel or AMD.")
    features: list[str] = Field(default_factory=list, description="CPU feature flags.")
    sockets: int | None = Field(default=None, ge=0, description="Sockets.")
    cores: int | None = Field(default=None, ge=0, description="Cores per socket.")
    threads: int | None = Field(default=None, ge=0, description="Threads per core.")


class Resources(ApiModel):
    """An amount of CPU, memory and disk."""

    cpu: int | None = Field(
        default=None, ge=0, description="CPUs (host CPUs or vCPUs, see the parent field)."
    )
    memory: Quantity | None = Field(default=None, description="Memory, e.g. 64Gi.")
    disk: Quantity | None = Field(
        default=None, description="Disk in the image directory, e.g. 500Gi."
    )


class HostHugepages(ApiModel):
    """Huge pages of one size on one host NUMA cell."""

    page_size: Quantity = Field(description="Page size, e.g. 2Mi or 1Gi.")
    total: int = Field(ge=0, description="Pages configured.")
    free: int = Field(ge=0, description="Pages free.")


class HostNumaCell(ApiModel):
    """One NUMA cell of the host."""

    id: int = Field(ge=0, description="NUMA cell id.")
    cpus: list[int] = Field(default_factory=list, description="Host CPU numbers in the cell.")
    siblings: list[list[int]] = Field(
        default_factory=list,
        description="SMT sibling sets: host CPUs sharing one core.",
    )
    memory: Quantity | None = Field(default=None, description="Memory of the cell.")
    hugepages: list[HostHugepages] = Field(
        default_factory=list,
        description="Huge pages per page size.",
    )


class HypervisorHostStatus(ApiModel):
    """What the host offers and carries, written by its agent."""

    hypervisor: Hypervisor | None = Field(default=None, description="Hypervisor type and versions.")
    libvirt_uri: str | None = Field(
        default=None,
        alias="libvirtURI",
        description="libvirt URI the agent uses, e.g. qemu:///system.",
    )
    cpu: HostCpu | None = Field(default=None, description="CPU model, vendor, features, topology.")
    capacity: Resources | None = Field(
        default=None,
        description="Physical totals: host CPUs, memory, disk.",
    )
    numa_cells: list[HostNumaCell] = Field(
        default_factory=list,
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
    conditions: list[Condition] = conditions_field(
        "Ready (agent heartbeat fresh) and Schedulable (Ready, not cordoned or draining)."
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the spec this status reflects.",
    )


class HypervisorHost(ApiModel):
    """A whole HypervisorHost object, for reading manifests and watch events."""

    api_version: Literal["kubevisor.io/v1alpha1"] = Field(
        default=API_VERSION, description="kubevisor.io/v1alpha1."
    )
    kind: Literal["HypervisorHost"] = Field(default=KIND, description="HypervisorHost.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Object metadata.")
    spec: HypervisorHostSpec = Field(
        default_factory=HypervisorHostSpec, description="Admin settings."
    )
    status: HypervisorHostStatus | None = Field(default=None, description="Observed state.")
