"""What the agent must do to a libvirt domain so it matches its VirtualMachine.

Level-triggered and stateless: the answer depends only on the VM as the API server has
it and the domain as libvirt reports it now, so the agent can crash and restart at any
point and pick up where the evidence says it stands. The agent performs the actions;
nothing here touches libvirt.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kubevisor.core import lifecycle
from kubevisor.core.lifecycle import Exit, RunStrategy


class DomainState(StrEnum):
    """libvirt's domain states, by the lower-case names libvirt itself prints."""

    NOSTATE = "nostate"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"
    """Being shut down (the guest got the ACPI request)."""
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"


@dataclass(frozen=True, slots=True)
class DomainObservation:
    """A domain as the agent sees it: libvirt's state and what its metadata says."""

    uuid: str
    state: DomainState
    reason: str
    """libvirt's reason for the state in lower case: booted, user, shutdown, destroyed, ..."""
    hardware: str = ""
    """Fingerprint of the spec the domain was defined from (`identity.hardware_fingerprint`)."""

    @property
    def active(self) -> bool:
        return self.state not in (DomainState.SHUTOFF, DomainState.CRASHED)


_EXIT_BY_REASON = {
    "shutdown": Exit.SHUTDOWN,
    "destroyed": Exit.DESTROYED,
    "crashed": Exit.CRASHED,
    "failed": Exit.CRASHED,
}


def last_exit(domain: DomainObservation | None) -> Exit:
    """How the guest's last run ended; NONE if it never ran (or runs now)."""
    if domain is None or domain.active:
        return Exit.NONE
    if domain.state is DomainState.CRASHED:
        return Exit.CRASHED
    # A defined domain that never started reports shutoff with reason "unknown".
    return _EXIT_BY_REASON.get(domain.reason, Exit.NONE)


class Action(StrEnum):
    """One step the agent takes on a domain; at most two per reconcile, in order."""

    DEFINE_AND_START = "define-and-start"
    """(Re)define from the current spec, preparing disks and seed ISO, then start."""
    SHUTDOWN = "shutdown"
    """Graceful (ACPI) shutdown, destroying the domain if the grace period runs out."""
    DESTROY = "destroy"
    SUSPEND = "suspend"
    RESUME = "resume"
    REMOVE = "remove"
    """Undefine the domain and delete everything created for it (overlays, seed ISO)."""


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    restart: bool = False
    """True when the start is a restart by the run strategy (counts in restartCount)."""


NOTHING = Plan(actions=())


def plan(
    *,
    run_strategy: RunStrategy,
    paused: bool,
    deleting: bool,
    domain: DomainObservation | None,
) -> Plan:
    """The actions that move `domain` towards what the VM asks for."""
    if deleting:
        # The VM is going away: stop the guest gently, then remove every trace.
        if domain is None:
            return NOTHING
        if domain.active:
            return Plan(actions=(Action.SHUTDOWN, Action.REMOVE))
        return Plan(actions=(Action.REMOVE,))
    intent = lifecycle.intent(run_strategy, last_exit=last_exit(domain))
    if domain is None:
        return Plan(actions=(Action.DEFINE_AND_START,)) if intent.run else NOTHING
    if not intent.run:
        return Plan(actions=(Action.SHUTDOWN,)) if domain.active else NOTHING
    if domain.state is DomainState.CRASHED:
        # libvirt keeps a crashed domain around; clear it so the next round can restart it.
        return Plan(actions=(Action.DESTROY,))
    if not domain.active:
        return Plan(actions=(Action.DEFINE_AND_START,), restart=intent.restart)
    if domain.state is DomainState.SHUTDOWN:
        # A shutdown is in progress; its SHUTOFF event will bring us back here.
        return NOTHING
    if paused and domain.state is not DomainState.PAUSED:
        return Plan(actions=(Action.SUSPEND,))
    if not paused and domain.state is DomainState.PAUSED:
        return Plan(actions=(Action.RESUME,))
    return NOTHING


@dataclass(frozen=True, slots=True, kw_only=True)
class Situation:
    """What one agent reconcile knows of a VM bound to its host (see `decide`)."""

    run_strategy: RunStrategy
    paused: bool
    deleting: bool
    """metadata.deletionTimestamp is set."""
    evicting: bool
    """status.eviction names this host: the controller moves the VM away."""
    migrating: bool
    """This host's agent is live-migrating the VM to another host now."""
    domain: DomainObservation | None


def decide(situation: Situation) -> Plan:
    """The actions one agent reconcile takes: `plan`, with evictions and migrations.

    An evicted VM is shut down gracefully and removed, as for a deletion; the controller
    then places it again elsewhere. While the VM migrates away libvirt pauses and finally
    removes the domain as it moves: none of that is something to correct. Deleting the VM
    still wins (the agent's migration aborts the transfer).
    """
    if situation.migrating and not situation.deleting:
        return NOTHING
    return plan(
        run_strategy=situation.run_strategy,
        paused=situation.paused,
        deleting=situation.deleting or situation.evicting,
        domain=situation.domain,
    )


def needs_images(chosen: Plan) -> bool:
    """Whether the plan defines the domain, so the disks' source images must be here."""
    return Action.DEFINE_AND_START in chosen.actions


def waiting_for_images(chosen: Plan, *, pulling: bool) -> Plan:
    """Nothing yet while images download: the overlays need them, and a finished download
    brings the VM back."""
    return NOTHING if pulling else chosen


def held_for_resize(chosen: Plan, *, pending: bool) -> Plan:
    """Nothing while the spec's size is not the one claimed on the host: a domain defined
    from it would run a size placement does not hold. The controller's claim (or a spec
    back at the claimed size) brings the VM back."""
    return NOTHING if pending and Action.DEFINE_AND_START in chosen.actions else chosen
