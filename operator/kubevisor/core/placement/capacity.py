"""Capacity with allocation ratios, as OpenStack Placement computes it.

`capacity = int((total - reserved) * ratio)`; one allocation may never exceed
`max_unit = total`, so a single VM never gets more than the host physically has,
whatever the ratio. Dedicated CPUs (PCPU) are never overcommitted (ratio 1.0);
shared vCPUs (VCPU) are overcommitted over the shared set only.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubevisor.api import hypervisorhost
from kubevisor.core.placement import units
from kubevisor.core.placement.model import HostSnapshot


@dataclass(frozen=True, slots=True)
class AllocationRatios:
    """Cluster-wide default ratios (Nova's initial defaults since 2023.1, which the
    HypervisorHost API documents for a host that sets none)."""

    cpu: float = hypervisorhost.DEFAULT_CPU_RATIO
    memory: float = hypervisorhost.DEFAULT_MEMORY_RATIO
    disk: float = hypervisorhost.DEFAULT_DISK_RATIO


@dataclass(frozen=True, slots=True)
class Inventory:
    """One resource class on one host (Placement's inventory record)."""

    total: int
    reserved: int = 0
    ratio: float = 1.0

    @property
    def capacity(self) -> int:
        """Never below 0: a host reserving more than it has offers nothing (`warnings`
        says so), not a negative amount."""
        return max(int((self.total - self.reserved) * self.ratio), 0)

    @property
    def max_unit(self) -> int:
        return self.total

    def fits(self, *, used: int, amount: int) -> bool:
        """Placement's `_capacity_check_clause` for one allocation of `amount`."""
        if amount <= 0:
            return True
        return amount <= self.max_unit and used + amount <= self.capacity

    def free(self, used: int) -> int:
        return self.capacity - used


@dataclass(frozen=True, slots=True)
class HostInventory:
    vcpu: Inventory
    pcpu: Inventory
    memory: Inventory
    disk: Inventory
    ratios: AllocationRatios


def effective_ratios(host: HostSnapshot, defaults: AllocationRatios) -> AllocationRatios:
    """Per-host ratios override the cluster defaults, resource by resource."""
    overrides = host.ratios
    return AllocationRatios(
        cpu=defaults.cpu if overrides.cpu is None else overrides.cpu,
        memory=defaults.memory if overrides.memory is None else overrides.memory,
        disk=defaults.disk if overrides.disk is None else overrides.disk,
    )


def inventory(host: HostSnapshot, defaults: AllocationRatios) -> HostInventory:
    """The four inventories the libvirt driver would report for `host`."""
    ratios = effective_ratios(host, defaults)
    shared = len(host.shared_cpus)
    return HostInventory(
        vcpu=Inventory(total=shared, reserved=min(host.reserved_vcpus, shared), ratio=ratios.cpu),
        pcpu=Inventory(total=len(host.dedicated_cpus), ratio=1.0),
        memory=Inventory(
            total=host.memory_mib, reserved=host.reserved_memory_mib, ratio=ratios.memory
        ),
        disk=Inventory(total=host.disk_mib, reserved=host.reserved_disk_mib, ratio=ratios.disk),
        ratios=ratios,
    )


def warnings(host: HostSnapshot) -> tuple[str, ...]:
    """What in a host's reservations leaves it nothing to offer (spec.reserved at or above
    what the host has), one sentence each; `kubevisor simulate` prints them."""
    found = []
    for resource, reserved, total, show in (
        ("memory", host.reserved_memory_mib, host.memory_mib, units.mib),
        ("disk", host.reserved_disk_mib, host.disk_mib, units.mib),
        ("shared CPUs", host.reserved_vcpus, len(host.shared_cpus), str),
    ):
        if reserved and reserved >= total:
            found.append(
                f"host {host.name} reserves {show(reserved)} of its {show(total)} {resource} "
                "(spec.reserved): it offers none"
            )
    return tuple(found)
