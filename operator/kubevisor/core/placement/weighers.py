"""Weighers, Nova style: raw values, min-max normalised to 0..1, times a multiplier.

Each weigher answers "how much do we like this host for this request" with a raw
number; `weigh` normalises every weigher over the candidates and sums
`multiplier x normalised`. The largest total wins. A positive multiplier on the
free-resource weighers spreads, a negative one packs (`nova/weights.py`).

Two weighers look at where a VM's disks can come from: `image_locality` (the host has
the VM's source images cached, so its disks start without a download) and
`shared_storage` (the host mounts the shared filesystem the VM's disks already live in,
so it restarts or migrates with them as they are). They score 0 on every host for a
request without source images or shared storage, so they never change its outcome, and
`notes` puts what they found into the decision's explanation.

`static_score` is the request-independent part (free RAM, vCPUs, disk) scaled by the
largest host capacity instead of the candidates' range: `PlacementState` keeps hosts
ordered by it so the scheduler meets good candidates first without a full scan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from kubevisor.core.placement.capacity import HostInventory
from kubevisor.core.placement.model import (
    GroupPolicy,
    HostSnapshot,
    HostUsage,
    NumaFit,
    Request,
)

if TYPE_CHECKING:
    from kubevisor.core.placement.state import PlacementState


@dataclass(frozen=True, slots=True)
class Multipliers:
    """Operator-set weigher multipliers (Nova's `*_weight_multiplier` options).

    `shared_storage` defaults to far more than all the other defaults together: a host
    with the VM's shared storage wins whenever one fits, since elsewhere the VM starts
    over from its image. `image_locality` weighs like one free-resource weigher: a cached image
    saves one download per host, not worth giving up spreading for.
    """

    ram: float = 1.0
    cpu: float = 1.0
    disk: float = 1.0
    soft_affinity: float = 1.0
    soft_anti_affinity: float = 1.0
    numa_packing: float = 1.0
    image_locality: float = 1.0
    shared_storage: float = 100.0


MULTIPLIER_DEFAULTS = {f.name: float(f.default) for f in fields(Multipliers)}  # type: ignore[arg-type]


def multiplier(text: str) -> tuple[str, float]:
    """One `NAME=VALUE` command-line setting of a `Multipliers` field (an argparse type:
    the controller and the simulators build `Multipliers(**dict(settings))`)."""
    name, sep, value = text.partition("=")
    if not sep or name not in MULTIPLIER_DEFAULTS:
        raise ValueError(f"not NAME=VALUE with a weigher's NAME: {text!r}")
    return name, float(value)


def multipliers_help() -> str:
    """The `--weigher-multiplier` help: the names and their defaults."""
    defaults = " ".join(f"{name}={value:g}" for name, value in MULTIPLIER_DEFAULTS.items())
    return f"a weigher's multiplier as NAME=VALUE, repeatable (defaults: {defaults})"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A host that passed every filter, with the NUMA fit it would get."""

    host: HostSnapshot
    numa: NumaFit | None = None


Weigher = Callable[[Candidate, Request, "PlacementState"], float]


def free_ram(candidate: Candidate, request: Request, state: PlacementState) -> float:
    """Free memory at the host's ratio (RAMWeigher)."""
    name = candidate.host.name
    return float(state.inventory(name).memory.free(state.usage(name).memory_mib))


def free_vcpus(candidate: Candidate, request: Request, state: PlacementState) -> float:
    """Free shared vCPUs at the host's ratio (CPUWeigher)."""
    name = candidate.host.name
    return float(state.inventory(name).vcpu.free(state.usage(name).vcpus))


def free_disk(candidate: Candidate, request: Request, state: PlacementState) -> float:
    """Free disk at the host's ratio (DiskWeigher)."""
    name = candidate.host.name
    return float(state.inventory(name).disk.free(state.usage(name).disk_mib))


def _members(candidate: Candidate, request: Request, state: PlacementState) -> int:
    if request.group is None:
        return 0
    return state.group_members(request.group.name, candidate.host.name)


def soft_affinity(candidate: Candidate, request: Request, state: PlacementState) -> float:
    """Group members already on the host (ServerGroupSoftAffinityWeigher)."""
    if request.group is None or request.group.policy != GroupPolicy.SOFT_AFFINITY:
        return 0.0
    return float(_members(candidate, request, state))


def soft_anti_affinity(candidate: Candidate, request: Request, state: PlacementState) -> float:
    """Minus the group members already on the host (ServerGroupSoftAntiAffinityWeigher)."""
    if request.group is None or request.group.policy != GroupPolicy.SOFT_ANTI_AFFINITY:
        return 0.0
    return -float(_members(candidate, request, state))


def numa_packing(candidate: Candidate, request: Request, state: PlacementState) -> float:
    """Share of the host's dedicated CPUs in use after this fit; positive multiplier packs
    pinned guests together, keeping whole hosts free for wide NUMA guests."""
    if candidate.numa is None or not candidate.numa.cells:
        return 0.0
    name = candidate.host.name
    total = state.inventory(name).pcpu.total
    if total == 0:
        return 0.0
    return (state.usage(name).pcpus + len(candidate.numa.pcpus)) / total


def _cached(host: HostSnapshot, request: Request) -> int:
    return len(request.images & host.images)


def image_locality(candidate: Candidate, request: Request, state: PlacementState) -> float:
    """Share of the request's source images already in the host's cache (by count, as
    sizes are only known for images a host has; kube-scheduler's ImageLocality)."""
    if not request.images:
        return 0.0
    return _cached(candidate.host, request) / len(request.images)


def shared_storage(candidate: Candidate, request: Request, state: PlacementState) -> float:
    """1 on a host mounting the shared storage the VM's disks live in, else 0."""
    wanted = request.shared_storage
    return 1.0 if wanted is not None and candidate.host.shared_storage == wanted else 0.0


WEIGHERS: tuple[tuple[str, Weigher], ...] = (
    ("ram", free_ram),
    ("cpu", free_vcpus),
    ("disk", free_disk),
    ("soft_affinity", soft_affinity),
    ("soft_anti_affinity", soft_anti_affinity),
    ("numa_packing", numa_packing),
    ("image_locality", image_locality),
    ("shared_storage", shared_storage),
)


def notes(host: HostSnapshot, request: Request) -> tuple[str, ...]:
    """What the disk weighers found on the host chosen for `request`, for the decision's
    explanation: "has 1 of 2 images cached", "has the VM's shared storage nfs-a"."""
    found = []
    if request.images:
        found.append(f"has {_cached(host, request)} of {len(request.images)} images cached")
    wanted = request.shared_storage
    if wanted is not None:
        has = "has" if host.shared_storage == wanted else "lacks"
        found.append(f"{has} the VM's shared storage {wanted}")
    return tuple(found)


def normalize(values: Sequence[float]) -> list[float]:
    """Min-max to 0..1; all equal gives all 0 (`nova/weights.py:normalize`)."""
    if not values:
        return []
    low, high = min(values), max(values)
    if high == low:
        return [0.0] * len(values)
    span = high - low
    return [(v - low) / span for v in values]


def weigh(
    candidates: Sequence[Candidate],
    request: Request,
    state: PlacementState,
    multipliers: Multipliers,
) -> list[float]:
    """Total weight of each candidate, in the candidates' order."""
    totals = [0.0] * len(candidates)
    for name, weigher in WEIGHERS:
        multiplier: float = getattr(multipliers, name)
        if multiplier == 0.0:
            continue
        raw = [weigher(c, request, state) for c in candidates]
        for i, value in enumerate(normalize(raw)):
            totals[i] += multiplier * value
    return totals


@dataclass(frozen=True, slots=True)
class Scale:
    """Largest capacities in the pool: the fixed denominators of `static_score`."""

    memory: float = 1.0
    vcpu: float = 1.0
    disk: float = 1.0


def static_score(
    inventory: HostInventory, usage: HostUsage, scale: Scale, multipliers: Multipliers
) -> float:
    """Request-independent weight used to keep hosts ordered (not Nova's final weight)."""
    return (
        multipliers.ram * inventory.memory.free(usage.memory_mib) / scale.memory
        + multipliers.cpu * inventory.vcpu.free(usage.vcpus) / scale.vcpu
        + multipliers.disk * inventory.disk.free(usage.disk_mib) / scale.disk
    )
