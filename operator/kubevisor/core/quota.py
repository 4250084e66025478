"""Namespace quotas on what VMs hold: the arithmetic, pure.

A namespace's limits are standard ResourceQuota objects whose `spec.hard` names resources
in kubevisor's domain (`RESOURCES`, e.g. `kubevisor.io/vcpus: "8"`); the controller
(handlers/quotas.py) reads them with `hard_limits` and enforces them at placement, under
the lock that holds every claim, with `admit`.

What counts is what holds capacity: a VM's claim in the placement state (`counted`), so a
VM counts from the moment placement claims a host for it until its claim is released
(deleted, or unbound to be placed again). A stopped VM that keeps its host keeps its
claim, and counts. A live migration's claim on its target is held under the job's key,
not the VM's, and `Ledger` counts VM keys only: a migrating VM counts once, and a
migration is never checked against a quota at all. A resize replaces the VM's claim, so
the new size is what counts from then on. Lowering a quota below what is used releases
nothing: `admit` refuses every new VM that would add to a resource already at or over its
limit, and nothing else changes.

Units inside: memory, huge pages and disk in MiB (placement's unit), everything else a
count. `hard_limits` reads quantities into these units, `formatted` writes them back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from kubevisor.api import quantity
from kubevisor.core.placement import numa, units
from kubevisor.core.placement.model import Claim, Request
from kubevisor.core.placement.state import PlacementState

DOMAIN = "kubevisor.io/"
VMS = f"{DOMAIN}vms"
VCPUS = f"{DOMAIN}vcpus"
"""Every vCPU of a VM, shared or dedicated (Nova's `cores`)."""
MEMORY = f"{DOMAIN}memory"
"""All of a VM's memory, huge-page-backed memory included (Nova's `ram`)."""
DEDICATED_CPUS = f"{DOMAIN}dedicated-cpus"
"""Host CPUs pinned to dedicated-CPU VMs (Nova's PCPU): one per vCPU, plus one for an
isolated emulator thread. Siblings a thread policy of `isolate` keeps free are not
counted: they depend on the host the VM lands on, and a quota must be checkable before."""
LOCAL_DISK = f"{DOMAIN}local-disk"
"""The disk a VM's claim holds on its host (the sum of its disks' sizes)."""
HUGEPAGES = f"{DOMAIN}hugepages-"
"""Followed by the page size (`kubevisor.io/hugepages-2Mi`): memory in such pages, whole
pages per guest NUMA cell (512Mi in 1Gi pages holds, and counts, 1Gi)."""
PCI = f"{DOMAIN}pci-"
"""Followed by the alias (`kubevisor.io/pci-gpu`): passthrough devices of that alias."""

RESOURCES = (VMS, VCPUS, MEMORY, DEDICATED_CPUS, LOCAL_DISK, f"{HUGEPAGES}<size>", f"{PCI}<alias>")
"""The names a quota may limit, as the README lists them."""

QUOTA_EXCEEDED = "QuotaExceeded"
"""The reason of a VM's Scheduled condition while a quota keeps it from being placed."""

Amounts = Mapping[str, int]
NOTHING: Amounts = MappingProxyType({})


def namespace_of(vm: str) -> str:
    """The namespace of a VM key ("namespace/name")."""
    return vm.split("/", 1)[0]


def in_mib(resource: str) -> bool:
    """Whether `resource` is an amount of memory or disk (MiB here, bytes on the wire)."""
    return resource in (MEMORY, LOCAL_DISK) or resource.startswith(HUGEPAGES)


def known(resource: str) -> bool:
    """Whether kubevisor counts `resource` (a fixed name, or a prefixed family)."""
    fixed = (VMS, VCPUS, MEMORY, DEDICATED_CPUS, LOCAL_DISK)
    if resource in fixed:
        return True
    for prefix in (HUGEPAGES, PCI):
        if resource.startswith(prefix) and len(resource) > len(prefix):
            return True
    return False


def _hugepages(page_kib: int) -> str:
    return f"{HUGEPAGES}{units.page_size(page_kib)}"


def requested(request: Request) -> dict[str, int]:
    """What a VM will count once placed, from its request alone: the very figures
    `counted` gives the claim placement makes for it, wherever it lands."""
    # Plain dicts, not Counters: this runs on every placement (bench/placement.py).
    amounts = {VMS: 1, VCPUS: request.vcpus, MEMORY: request.memory_mib}
    if request.dedicated:
        amounts[DEDICATED_CPUS] = request.pcpus
    page = request.hugepage_kib
    if page is not None:
        # Whole pages per guest cell, as NUMA fitting takes them (`numa._memory`).
        pages = sum(math.ceil(cell.memory_mib * 1024 / page) for cell in numa.guest_cells(request))
        amounts[_hugepages(page)] = pages * page // 1024
    for pci in request.pci:
        name = f"{PCI}{pci.alias}"
        amounts[name] = amounts.get(name, 0) + pci.count
    if request.disk_mib:
        amounts[LOCAL_DISK] = request.disk_mib
    return amounts


def counted(claim: Claim) -> dict[str, int]:
    """What one VM's claim counts against its namespace's quotas."""
    amounts = {VMS: 1, VCPUS: claim.vcpus, MEMORY: claim.memory_mib}
    if claim.disk_mib:
        amounts[LOCAL_DISK] = claim.disk_mib
    if claim.numa is None:
        return amounts
    pins = sum(len(cell.pins) for cell in claim.numa.cells)
    # A dedicated guest's vCPUs are its pins (claim.vcpus counts shared ones only).
    amounts[VCPUS] += pins
    if pins:
        amounts[DEDICATED_CPUS] = pins + len(claim.numa.emulator_pins)
    more: list[tuple[str, int]] = [(f"{PCI}{device.alias}", 1) for device in claim.numa.pci]
    for cell in claim.numa.cells:
        if cell.hugepage_kib is not None and cell.hugepages:
            more.append((_hugepages(cell.hugepage_kib), cell.hugepages * cell.hugepage_kib // 1024))
    for name, amount in more:
        amounts[name] = amounts.get(name, 0) + amount
    return amounts


def total(amounts: Iterable[Amounts]) -> dict[str, int]:
    summed: dict[str, int] = {}
    for one in amounts:
        for resource, amount in one.items():
            summed[resource] = summed.get(resource, 0) + amount
    return summed


@dataclass(frozen=True, slots=True)
class Quota:
    """One ResourceQuota's limits on kubevisor's resources (`name` is the object's)."""

    name: str
    hard: Amounts


def hard_limits(hard: Mapping[str, str]) -> tuple[dict[str, int], tuple[str, ...]]:
    """The limits of a ResourceQuota's `spec.hard` on kubevisor's resources, in this
    module's units, and what cannot be read (a name of kubevisor's domain it does not
    count, or a value that is not a quantity). Other resources are the quota controller's.
    Memory and disk round down to whole MiB: a limit is never read as more than it says."""
    limits: dict[str, int] = {}
    problems: list[str] = []
    for resource, text in sorted(hard.items()):
        if not resource.startswith(DOMAIN):
            continue
        if not known(resource):
            problems.append(f"{resource} is not a resource kubevisor counts")
            continue
        try:
            value = quantity.parse(str(text))
        except quantity.QuantityError as error:
            problems.append(f"{resource}: {error}")
            continue
        limits[resource] = math.floor(value / quantity.MI if in_mib(resource) else value)
    return limits, tuple(problems)


def formatted(resource: str, amount: int) -> str:
    """An amount as a quantity on the wire: memory and disk as bytes ("2Gi"), counts bare."""
    if in_mib(resource):
        return quantity.format_bytes(amount * quantity.MI)
    return str(amount)


def shown(resource: str, amount: int) -> str:
    """An amount as a message quotes it: memory and disk exact ("1536Mi", "0Mi")."""
    return units.mib(amount) if in_mib(resource) else str(amount)


@dataclass(frozen=True, slots=True)
class Exceeded:
    """A VM that one quota's limit on one resource keeps out, with the figures."""

    quota: str
    resource: str
    requested: int
    used: int
    hard: int

    @property
    def message(self) -> str:
        return (
            f"exceeds quota {self.quota}: {self.resource} requested "
            f"{shown(self.resource, self.requested)}, used {shown(self.resource, self.used)}, "
            f"hard {shown(self.resource, self.hard)}"
        )


def admit(quotas: Iterable[Quota], *, used: Amounts, wanted: Amounts) -> Exceeded | None:
    """Whether a VM counting `wanted` may be placed in a namespace whose VMs count `used`:
    None, or the first limit it would go over (quotas in the order given, resources by
    name). A resource the VM does not ask for never refuses it, even where usage is over
    the limit."""
    for quota in quotas:
        hard = quota.hard
        over = [
            r
            for r, need in wanted.items()
            if need > 0 and r in hard and used.get(r, 0) + need > hard[r]
        ]
        if over:
            resource = min(over)
            need, have = wanted[resource], used.get(resource, 0)
            return Exceeded(quota.name, resource, need, have, hard[resource])
    return None


def status_used(quota: Quota, used: Amounts) -> dict[str, str]:
    """A ResourceQuota's `status.used` for kubevisor's resources it limits: every one, 0
    included, as the quota controller writes its own."""
    return {resource: formatted(resource, used.get(resource, 0)) for resource in quota.hard}


class Ledger:
    """What each namespace's VMs hold, kept by following a placement state's claims
    (`follow`): every claim and release updates its namespace's totals, so reading them
    costs the same whatever the namespace holds, and they never disagree with the state.

    Claims under keys that are not VMs' (a migration's claim on its target,
    `migration:<namespace>/<job>`) are not counted: a migrating VM counts once."""

    def __init__(self) -> None:
        self.following: PlacementState | None = None
        self._totals: dict[str, dict[str, int]] = {}
        self._held: dict[str, dict[str, int]] = {}

    def follow(self, state: PlacementState) -> None:
        """Count `state`'s claims from now on, starting from those it holds."""
        self._totals.clear()
        self._held.clear()
        self.following = state
        for claim in state.claims().values():
            self._change(claim, 1)
        state.watch(self._changed_in(state))

    def _changed_in(self, state: PlacementState) -> Callable[[Claim, int], None]:
        def changed(claim: Claim, sign: int) -> None:
            if state is self.following:  # a state given up since counts no more
                self._change(claim, sign)

        return changed

    def _change(self, claim: Claim, sign: int) -> None:
        if ":" in claim.vm:
            return
        namespace = namespace_of(claim.vm)
        if sign > 0:
            amounts = self._held[claim.vm] = counted(claim)
        else:
            amounts = self._held.pop(claim.vm, {})
        totals = self._totals.setdefault(namespace, {})
        for resource, amount in amounts.items():
            left = totals[resource] = totals.get(resource, 0) + sign * amount
            if not left:
                del totals[resource]
        if not totals:
            del self._totals[namespace]

    def used(self, namespace: str, *, besides: str | None = None) -> dict[str, int]:
        """What the namespace's VMs hold now (`besides`: leave that VM out)."""
        totals = self._totals.get(namespace, NOTHING)
        held = self._held.get(besides) if besides is not None else None
        if held is None or namespace_of(besides or "") != namespace:
            return dict(totals)
        return {resource: amount - held.get(resource, 0) for resource, amount in totals.items()}
