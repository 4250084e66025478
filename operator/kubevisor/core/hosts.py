"""Judging hypervisor hosts: alive from their heartbeat, and the controller's host status.

The agent heartbeats by renewing a Lease; the controller decides from the Lease's
renewTime whether the host is Ready, and publishes that with what the placement state
holds on the host (allocated, allocatable, VM count) in the HypervisorHost status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from kubevisor.api import conditions as cond
from kubevisor.api import quantity, schema
from kubevisor.api.conditions import Condition
from kubevisor.api.hypervisorhost import Resources
from kubevisor.core.conditions import Row, truth, wire
from kubevisor.core.placement.capacity import HostInventory
from kubevisor.core.placement.model import HostUsage

DEFAULT_LEASE_DURATION = 40
"""Seconds an agent's Lease promises (the agent's --lease-duration default), and what the
controller assumes of a Lease that names none."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The last renewal of a host's Lease."""

    renewed: datetime
    duration: float
    """The Lease's leaseDurationSeconds: how long the agent promised to live."""


@dataclass(frozen=True, slots=True)
class Judgement:
    ready: bool
    reason: str
    message: str
    down_for: float
    """Seconds since the heartbeat expired (0 while Ready)."""
    timeout: float = 0.0
    """Seconds after its last renewal the heartbeat expired (once it has)."""


def judge(heartbeat: Heartbeat | None, *, now: datetime, timeout: float | None) -> Judgement:
    """Ready while the last renewal is younger than `timeout` (default: the Lease's duration)."""
    if heartbeat is None:
        return Judgement(False, "NoHeartbeat", "the host's agent never renewed its Lease", 0.0)
    limit = timeout if timeout is not None else heartbeat.duration
    expires = heartbeat.renewed + timedelta(seconds=limit)
    if now < expires:
        return Judgement(True, "AgentHeartbeating", "the host's agent renews its Lease", 0.0)
    stamp = schema.timestamp(heartbeat.renewed)
    return Judgement(
        False,
        "HeartbeatExpired",
        f"the host's agent last renewed its Lease at {stamp}, more than {limit:.0f}s ago",
        (now - expires).total_seconds(),
        limit,
    )


HOST_NOT_FOUND = "HostNotFound"


def judge_missing(
    heartbeat: Heartbeat | None,
    *,
    name: str,
    missing_since: datetime,
    now: datetime,
    timeout: float | None,
) -> Judgement:
    """A host VMs are bound to that has no HypervisorHost object: deleted for good, or
    named by a hand-edited status. While its agent still renews its Lease the host lives
    (its agent registers the object again); otherwise it is lost like a host whose
    heartbeat expired, for as long as the heartbeat has been expired, or, for a host that
    never had one, since the controller first missed the object (`missing_since`)."""
    alive = judge(heartbeat, now=now, timeout=timeout)
    if alive.ready:
        return alive
    down_for = (
        alive.down_for if heartbeat is not None else max(0.0, (now - missing_since).total_seconds())
    )
    return Judgement(
        False, HOST_NOT_FOUND, f"HypervisorHost {name} does not exist", down_for, alive.timeout
    )


@dataclass(frozen=True, slots=True)
class FailoverNotes:
    """What the failover side (`handlers.evacuation`) adds to a host's status."""

    delay: str | None = None
    """Why a lost host's failover waits longer than the grace (`selffence.failover_delay`),
    which the Ready condition adds to its message."""
    evacuation: dict[str, object] | None = None
    """status.evacuation: the outcome of the last spec.evacuate request (`core.evacuate`)."""
    fenced: Row | None = None
    """The Fenced condition (`selffence.fenced`)."""
    last_fenced: datetime | None = None
    """status.lastFenced: when the host's guests were last known stopped."""
    fencing_failed: Row | None = None
    """The FencingFailed condition of a host with spec.fencing (`powerfence.fencing_failed`)."""


def resources(inventory: HostInventory, usage: HostUsage) -> tuple[Resources, Resources]:
    """(allocatable, allocated): capacity after reservation x ratio, and what claims hold."""
    mib = quantity.MI
    allocatable = Resources(
        cpu=inventory.vcpu.capacity + inventory.pcpu.capacity,
        memory=quantity.format_bytes(max(inventory.memory.capacity, 0) * mib),
        disk=quantity.format_bytes(max(inventory.disk.capacity, 0) * mib),
    )
    allocated = Resources(
        cpu=usage.vcpus + usage.pcpus,
        memory=quantity.format_bytes(usage.memory_mib * mib),
        disk=quantity.format_bytes(usage.disk_mib * mib),
    )
    return allocatable, allocated


def controller_host_status(
    *,
    judgement: Judgement,
    unschedulable: bool,
    maintenance: bool,
    allocatable: Resources,
    allocated: Resources,
    vm_count: int,
    generation: int,
    previous: Sequence[Condition],
    now: datetime,
    drain: dict[str, object] | None = None,
    cpu_set_errors: Sequence[str] = (),
    failover: FailoverNotes | None = None,
) -> dict[str, object]:
    """The controller-owned fields of a HypervisorHost status, as the wire dict it applies.

    `drain` is `core.drain.progress(...).to_wire()` while spec.maintenance is true;
    `cpu_set_errors` what is wrong with the host's CPU sets (`placement.cpusets`), which
    the Schedulable condition names (the controller owns it, and sees both the admin's
    sets and the CPUs the agent reports); `failover` what the failover side knows of the
    host (`FailoverNotes`)."""
    notes = failover or FailoverNotes()
    if not judgement.ready:
        schedulable = Row(cond.SCHEDULABLE, "False", "NotReady", judgement.message)
    elif cpu_set_errors:
        schedulable = Row(cond.SCHEDULABLE, "False", "InvalidCpuSets", "; ".join(cpu_set_errors))
    elif maintenance:
        schedulable = Row(
            cond.SCHEDULABLE,
            "False",
            "Maintenance",
            "spec.maintenance is true: the host is drained",
        )
    elif unschedulable:
        schedulable = Row(cond.SCHEDULABLE, "False", "Cordoned", "spec.unschedulable is true")
    else:
        schedulable = Row(cond.SCHEDULABLE, "True", "Schedulable", "new VMs may be placed here")
    ready = judgement.message
    if not judgement.ready and notes.delay:
        ready = f"{ready}; {notes.delay}"
    rows = (
        Row(cond.READY, truth(judgement.ready), judgement.reason, ready),
        schedulable,
        *([notes.fenced] if notes.fenced is not None else []),
        *([notes.fencing_failed] if notes.fencing_failed is not None else []),
    )
    status: dict[str, object] = {
        "allocatable": allocatable.to_wire(),
        "allocated": allocated.to_wire(),
        "vmCount": vm_count,
        "observedGeneration": generation,
        "conditions": wire(previous, rows, generation=generation, now=now),
    }
    if drain is not None:
        status["drain"] = drain
    if notes.evacuation is not None:
        status["evacuation"] = notes.evacuation
    if notes.last_fenced is not None:
        status["lastFenced"] = schema.timestamp(notes.last_fenced)
    return status


INVALID_SPEC = "InvalidSpec"


def invalid_host_status(
    *,
    judgement: Judgement,
    message: str,
    generation: int,
    previous: Sequence[Condition],
    now: datetime,
) -> dict[str, object]:
    """The controller's HypervisorHost status for a host it cannot read (`message` says
    why: a spec or status the model refuses, a value placement cannot evaluate): Ready as
    its heartbeat says, not Schedulable, and no capacity figures, since none can be
    computed. Placement leaves the host out until it reads again."""
    rows = (
        Row(cond.READY, truth(judgement.ready), judgement.reason, judgement.message),
        Row(cond.SCHEDULABLE, "False", INVALID_SPEC, message),
    )
    return {
        "observedGeneration": generation,
        "conditions": wire(previous, rows, generation=generation, now=now),
    }
