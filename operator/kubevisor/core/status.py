"""VirtualMachine status as one pure function of explicit inputs.

`bound_vm_status` is what the agent of the bound host writes: the phase after binding,
`status.domain`, `created`, `restartCount`, `imagePulls`, and the conditions it owns
(Ready, Paused, Reconciling, Stalled, RestartRequired, LimitsEnforced, and ImagePulling for
a VM whose disks download their images). The phase comes from an ordered first-match
table: the first row whose test holds decides, so the precedence is visible in one place.
`invalid_spec_status` is what it writes instead for a VM whose spec it cannot read.

`controller_vm_status` is the controller's part (phase before binding, host, placement,
Scheduled, and Unknown once the host is lost), from a first-match table of its own.

Conditions follow the kstatus conventions Flux and `kubectl wait` read: Reconciling while
work is in flight, Stalled when it cannot progress, Ready as the summary, and a stopped
VM whose run strategy wants it stopped is Ready, so GitOps tools do not wait forever.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from kubevisor.api import conditions as cond
from kubevisor.api.conditions import Condition
from kubevisor.api.virtualmachine import DomainStatus, PlacementStatus, VirtualMachineSpec
from kubevisor.core import conditions, imagepulls, lifecycle
from kubevisor.core.conditions import Row, truth, wire
from kubevisor.core.convergence import DomainObservation, DomainState, last_exit
from kubevisor.core.imagepulls import ImagePullState
from kubevisor.core.lifecycle import Exit, Phase
from kubevisor.core.quota import QUOTA_EXCEEDED
from kubevisor.core.resizing import RESIZE_PENDING, RESIZE_REFUSED, RESIZED, ResizeNote

RESTART_REQUIRED = "RestartRequired"
LIMITS_ENFORCED = "LimitsEnforced"
INVALID_SPEC = "InvalidSpec"
AGENT_CONDITIONS = (
    cond.READY,
    cond.PAUSED,
    cond.RECONCILING,
    cond.STALLED,
    RESTART_REQUIRED,
    LIMITS_ENFORCED,
    cond.IMAGE_PULLING,
)


@dataclass(frozen=True, slots=True)
class AgentError:
    """The last error the agent hit for this VM; permanent ones stall it."""

    permanent: bool
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything the bound VM's status depends on."""

    spec: VirtualMachineSpec
    generation: int
    deleting: bool
    domain: DomainObservation | None
    hardware: str
    """Fingerprint of the current spec's restart-requiring parts."""
    error: AgentError | None = None
    migrating_to: str | None = None
    """The host this agent is migrating the domain to, while it does."""
    moving_cold: bool = False
    """That migration is a cold one (`core.coldmigration`): the guest is shut down here."""
    evicting: str | None = None
    """Why the controller asked for the domain to be stopped here (status.eviction)."""
    unenforced: tuple[str, ...] = ()
    """Limits of the spec this host cannot enforce (`domain.converter.unenforced_limits`)."""
    pulls: tuple[ImagePullState, ...] = ()
    """The disks whose images must be downloaded before the domain can start; empty when
    every image is cached (or the agent is not about to start the domain)."""
    resize: ResizeNote | None = None
    """Set while the agent holds the start for the controller's claim of a new size."""

    @property
    def wants_run(self) -> bool:
        return lifecycle.intent(self.spec.run_strategy, last_exit=last_exit(self.domain)).run

    @property
    def state(self) -> DomainState | None:
        return None if self.domain is None else self.domain.state


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """A phase with the summary conditions that go with it."""

    phase: Phase
    ready: bool
    reason: str
    message: str
    reconciling: bool = False
    stalled: bool = False


def _in_progress(phase: Phase, reason: str, message: str, *, ready: bool = False) -> Verdict:
    """Work in flight: Reconciling, and not Ready unless the guest keeps serving."""
    return Verdict(phase=phase, ready=ready, reason=reason, message=message, reconciling=True)


def _current(phase: Phase, reason: str, message: str) -> Verdict:
    """The domain is as the spec wants it: Ready, nothing in flight."""
    return Verdict(phase=phase, ready=True, reason=reason, message=message)


def _failed(reason: str, message: str) -> Verdict:
    """Nothing changes without a new spec: Failed and Stalled."""
    return Verdict(phase="Failed", ready=False, reason=reason, message=message, stalled=True)


def _deleting(i: Inputs) -> Verdict | None:
    if not i.deleting:
        return None
    return _in_progress("Terminating", "Deleting", "shutting down and removing the domain")


def _permanent_error(i: Inputs) -> Verdict | None:
    if i.error is None or not i.error.permanent:
        return None
    return _failed(i.error.reason, i.error.message)


def _evicting(i: Inputs) -> Verdict | None:
    if i.evicting is None:
        return None
    if i.domain is None:
        waiting = f"stopped here ({i.evicting}); waiting to be placed elsewhere"
        return _in_progress("Stopped", "Evicted", waiting)
    return _in_progress(
        "Stopping", "Evicting", f"shutting the guest down to move it ({i.evicting})"
    )


def _migrating(i: Inputs) -> Verdict | None:
    if i.migrating_to is not None and i.moving_cold and i.domain is not None:
        # Whatever its domain does meanwhile (shut down, started paused, copied), the VM
        # is moving; the guest serves nothing until it boots on the target.
        moving = f"moving cold to host {i.migrating_to}: shut down here, its disks copied"
        return _in_progress("Migrating", "Migrating", moving)
    if i.migrating_to is None or i.state not in (DomainState.RUNNING, DomainState.PAUSED):
        return None
    # Ready stays True: the guest keeps serving while its memory is copied.
    moving = f"live-migrating to host {i.migrating_to}"
    return _in_progress("Migrating", "Migrating", moving, ready=True)


def _pulling_images(i: Inputs) -> Verdict | None:
    if not i.pulls:
        return None
    pulling, reason, message = imagepulls.pull_summary(i.pulls)
    if not pulling:
        return _failed(reason, message)
    return _in_progress("Starting", "ImagePulling", message)


def _resize_held(i: Inputs) -> Verdict | None:
    if i.resize is None:
        return None
    # Not Stalled even when refused: capacity freed on the host lets it start (the
    # controller tries again whenever a claim there is released).
    return Verdict(
        phase="Stopped",
        ready=False,
        reason=RESIZE_REFUSED if i.resize.refused else RESIZE_PENDING,
        message=i.resize.message,
        reconciling=True,
    )


NETWORK_NOT_READY = "NetworkNotReady"
"""The agent's retryable error while a VM's Networks cannot be realised on its host."""


def _waiting_for_network(i: Inputs) -> Verdict | None:
    """Not started because an interface's Network is not realised here (yet): say which,
    rather than "creating the domain" while the agent retries."""
    if i.domain is not None or i.error is None or i.error.reason != NETWORK_NOT_READY:
        return None
    return Verdict(
        phase="Starting",
        ready=False,
        reason=NETWORK_NOT_READY,
        message=i.error.message,
        reconciling=True,
    )


def _no_domain(i: Inputs) -> Verdict | None:
    if i.domain is not None:
        return None
    if i.wants_run:
        return _in_progress("Starting", "Starting", "creating the domain")
    return _current("Stopped", "Stopped", "stopped, as the run strategy asks")


def _running(i: Inputs) -> Verdict | None:
    if i.state not in (DomainState.RUNNING, DomainState.BLOCKED):
        return None
    if not i.wants_run:
        return _in_progress("Stopping", "Stopping", "shutting the guest down")
    if i.spec.paused:
        return _in_progress("Running", "Pausing", "pausing the guest")
    return _current("Running", "Running", "the domain is running")


def _paused(i: Inputs) -> Verdict | None:
    if i.state is not DomainState.PAUSED:
        return None
    if i.spec.paused:
        return _current("Paused", "Paused", "paused, as spec.paused asks")
    return _in_progress("Paused", "Resuming", "resuming the guest")


def _shutting_down(i: Inputs) -> Verdict | None:
    if i.state is not DomainState.SHUTDOWN:
        return None
    return _in_progress("Stopping", "Stopping", "the guest is shutting down")


def _ended(i: Inputs) -> Verdict | None:
    if i.wants_run:
        return _in_progress("Starting", "Restarting", "starting the guest again")
    if last_exit(i.domain) is Exit.CRASHED:
        return _failed(
            "Crashed",
            f"the guest crashed ({i.domain.reason if i.domain else 'unknown'}) and "
            f"runStrategy {i.spec.run_strategy} does not restart it",
        )
    return _current("Stopped", "Stopped", "stopped, as the run strategy asks")


PHASE_TABLE: Sequence[Callable[[Inputs], Verdict | None]] = (
    _deleting,
    _evicting,
    _permanent_error,
    _migrating,
    _pulling_images,
    _resize_held,
    _waiting_for_network,
    _no_domain,
    _running,
    _paused,
    _shutting_down,
    _ended,
)
"""Ordered: the first row that returns a verdict decides."""


In = TypeVar("In")
Out = TypeVar("Out")


def first_match(table: Sequence[Callable[[In], Out | None]], inputs: In) -> Out:
    """The verdict of the first row of an ordered first-match `table` that returns one
    (`verdict` and `controller_verdict`); each table's last row always decides."""
    for row in table:
        found = row(inputs)
        if found is not None:
            return found
    raise AssertionError("the last row of a first-match table always decides")


def verdict(inputs: Inputs) -> Verdict:
    return first_match(PHASE_TABLE, inputs)


def bound_vm_status(
    inputs: Inputs,
    *,
    previous_phase: Phase | None,
    previous: Sequence[Condition],
    restart_count: int,
    now: datetime,
) -> dict[str, object]:
    """The agent's part of `status`, as the wire dict it applies (camelCase keys)."""
    v = verdict(inputs)
    paused = inputs.state is DomainState.PAUSED
    restart_required = (
        inputs.domain is not None
        and inputs.domain.active
        and bool(inputs.domain.hardware)
        and inputs.domain.hardware != inputs.hardware
    )
    rows = [
        Row(cond.READY, truth(v.ready), v.reason, v.message),
        Row(
            cond.PAUSED,
            truth(paused),
            "Paused" if paused else "NotPaused",
            "the guest's vCPUs are paused" if paused else "the guest is not paused",
        ),
        Row(
            cond.RECONCILING,
            truth(v.reconciling),
            v.reason if v.reconciling else "Done",
            v.message if v.reconciling else "nothing in flight",
        ),
        Row(
            cond.STALLED,
            truth(v.stalled),
            v.reason if v.stalled else "NotStalled",
            v.message if v.stalled else "making progress",
        ),
        Row(
            RESTART_REQUIRED,
            truth(restart_required),
            "SpecChanged" if restart_required else "UpToDate",
            "vCPUs, memory, NUMA, disks, boot or networks changed; restart the VM to apply them"
            if restart_required
            else "the domain matches the spec",
        ),
        Row(
            LIMITS_ENFORCED,
            truth(not inputs.unenforced),
            "NotEnforced" if inputs.unenforced else "Enforced",
            "; ".join(inputs.unenforced) or "the host enforces every limit of the spec",
        ),
    ]
    sourced = [disk.name for disk in inputs.spec.disks if disk.source is not None]
    if sourced:
        rows.append(imagepulls.image_pulling(inputs.pulls, sourced))
    status: dict[str, object] = {
        "phase": lifecycle.check_transition(previous_phase, v.phase),
        "created": inputs.domain is not None,
        "restartCount": restart_count,
        "observedGeneration": inputs.generation,
        "conditions": wire(previous, rows, generation=inputs.generation, now=now),
    }
    if sourced:
        # Always written, empty included: a finished download must leave the list.
        status["imagePulls"] = imagepulls.image_pulls(inputs.pulls)
    if inputs.domain is not None:
        status["domain"] = DomainStatus(
            uuid=inputs.domain.uuid, state=inputs.domain.state.value, reason=inputs.domain.reason
        ).to_wire()
    return status


def invalid_spec_status(
    message: str,
    *,
    generation: int,
    previous: Sequence[Condition],
    now: datetime,
    unbound: bool = False,
    reason: str = INVALID_SPEC,
) -> dict[str, object]:
    """The status for a VM the API server accepted but kubevisor cannot read (`message`
    says why): Failed and Stalled, so nobody waits for it, until the spec is fixed. The
    agent of the bound host writes it; the controller, for an `unbound` VM it cannot read
    or place, also says it is not Scheduled and not Reconciling (it owns those then).
    `reason` is the conditions' (a flavor the VM cannot run says FlavorConflict, ...).
    The phase is not checked against the lifecycle: a spec can become unreadable (a newer
    schema, a hand-edited object) in any phase."""
    rows: tuple[Row, ...] = (
        Row(cond.STALLED, "True", reason, message),
        Row(cond.READY, "False", reason, message),
    )
    if unbound:
        rows += (
            Row(cond.SCHEDULED, "False", reason, message),
            Row(cond.RECONCILING, "False", reason, message),
        )
    return {
        "phase": "Failed",
        "observedGeneration": generation,
        "conditions": wire(previous, rows, generation=generation, now=now),
    }


def differs(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether applying the VM status `wanted` would change `current`: as
    `conditions.differs`, with `placement` compared as the model reads it."""
    placement = wanted.get("placement")
    if placement is not None:
        have = PlacementStatus.model_validate(current.get("placement") or {}).to_wire()
        if have != placement:
            return True
    rest = {field: value for field, value in wanted.items() if field != "placement"}
    return conditions.differs(current, rest)


# -- the controller's part -----------------------------------------------------------------

CONTROLLER_CONDITIONS = (cond.SCHEDULED,)


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """Where placement bound a VM: the host and the NUMA cells, pins and pages there."""

    host: str
    placement: PlacementStatus | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerInputs:
    """What the controller's part of a VM's status depends on."""

    spec: VirtualMachineSpec
    generation: int
    binding: Binding | None
    unschedulable: str | None = None
    """The placement engine's explanation when no host fits (or why the VM's addresses
    cannot be had)."""
    unschedulable_reason: str = "Unschedulable"
    """The reason of Scheduled=False: Unschedulable, QuotaExceeded (phase Pending), or an
    address refusal's (`core.network.ipam.Reason`, e.g. AddressPoolExhausted)."""
    host_lost: str | None = None
    """Why the bound host is not Ready (its heartbeat expired), if it is not."""
    host_missing: bool = False
    """The bound host has no HypervisorHost object (deleted, or never existed)."""
    migrated_from: str | None = None
    """Set when `binding` is the target of a live migration that just completed."""
    last_migration: dict[str, Any] | None = None
    """status.lastMigration as the wire dict; carried in every write (the controller owns it)."""
    eviction: dict[str, Any] | None = None
    """status.eviction as the wire dict: the agent is to stop the domain on the bound host."""
    resize: ResizeNote | None = None
    """What checking the VM's new size on its bound host came to, for the Scheduled
    condition (None: no resize to report)."""


@dataclass(frozen=True, slots=True)
class ControllerVerdict:
    """The phase the controller writes (None: the agent of the bound host owns it now)
    and the conditions that go with it."""

    phase: Phase | None
    conditions: tuple[Row, ...]


_MAKING_PROGRESS = Row(cond.STALLED, "False", "NotStalled", "making progress")


def _unbound_halted(i: ControllerInputs) -> ControllerVerdict | None:
    if i.binding is not None or i.spec.run_strategy != "Halted":
        return None
    return ControllerVerdict(
        "Stopped",
        (
            Row(cond.READY, "True", "Stopped", "stopped, as the run strategy asks"),
            Row(cond.RECONCILING, "False", "Done", "nothing in flight"),
            _MAKING_PROGRESS,
        ),
    )


def _unbound_unschedulable(i: ControllerInputs) -> ControllerVerdict | None:
    if i.binding is not None or i.unschedulable is None:
        return None
    why, reason = i.unschedulable, i.unschedulable_reason
    # Over its namespace's quota, a VM is Pending, not Unschedulable: hosts could take
    # it, its namespace may not yet.
    over_quota = reason == QUOTA_EXCEEDED
    return ControllerVerdict(
        "Pending" if over_quota else "Unschedulable",
        (
            Row(cond.SCHEDULED, "False", reason, why),
            Row(cond.READY, "False", reason, why),
            # Not Stalled: a host may be added or freed at any time, and then it runs.
            Row(cond.RECONCILING, "True", reason, why),
            Row(
                cond.STALLED,
                "False",
                "NotStalled",
                "waiting for quota" if over_quota else "waiting for capacity",
            ),
        ),
    )


def _unbound_pending(i: ControllerInputs) -> ControllerVerdict | None:
    if i.binding is not None:
        return None
    return ControllerVerdict(
        "Pending",
        (
            Row(cond.READY, "False", "Pending", "waiting for placement"),
            Row(cond.RECONCILING, "True", "Scheduling", "waiting for placement"),
            _MAKING_PROGRESS,
        ),
    )


def _bound_evicting(i: ControllerInputs) -> ControllerVerdict | None:
    if i.binding is None or i.eviction is None:
        return None
    # Phase, Ready and Reconciling stay the agent's: it reports the shutdown.
    evicting = f"placed on host {i.binding.host}; evicting: {i.eviction.get('reason')}"
    return ControllerVerdict(None, (Row(cond.SCHEDULED, "True", "Evicting", evicting),))


def _bound_migrated(i: ControllerInputs) -> ControllerVerdict | None:
    if i.binding is None or i.migrated_from is None:
        return None
    # The domain already runs there: phase, Ready and Reconciling stay the agent's.
    moved = f"live-migrated from host {i.migrated_from} to host {i.binding.host}"
    return ControllerVerdict(None, (Row(cond.SCHEDULED, "True", "Migrated", moved),))


def _bound_host_lost(i: ControllerInputs) -> ControllerVerdict | None:
    if i.binding is None or i.host_lost is None:
        return None
    reason = "HostNotFound" if i.host_missing else "HostNotReady"
    return ControllerVerdict(
        "Unknown",
        (
            Row(cond.SCHEDULED, "True", "Scheduled", f"placed on host {i.binding.host}"),
            Row(cond.READY, "Unknown", reason, i.host_lost),
        ),
    )


def _bound_resize(i: ControllerInputs) -> ControllerVerdict | None:
    if i.binding is None or i.resize is None:
        return None
    # The domain is the agent's (it holds the start until this write): phase and Ready stay
    # its own; Scheduled says what became of the size.
    reason = RESIZE_REFUSED if i.resize.refused else RESIZED
    return ControllerVerdict(None, (Row(cond.SCHEDULED, "True", reason, i.resize.message),))


def _bound_scheduled(i: ControllerInputs) -> ControllerVerdict | None:
    if i.binding is None:
        return None
    placed = f"placed on host {i.binding.host}"
    waiting = f"{placed}; waiting for its agent"
    return ControllerVerdict(
        "Scheduled",
        (
            Row(cond.SCHEDULED, "True", "Scheduled", placed),
            Row(cond.READY, "False", "Scheduled", waiting),
            Row(cond.RECONCILING, "True", "Scheduled", waiting),
        ),
    )


CONTROLLER_TABLE: Sequence[Callable[[ControllerInputs], ControllerVerdict | None]] = (
    _unbound_halted,
    _unbound_unschedulable,
    _unbound_pending,
    _bound_evicting,
    _bound_migrated,
    _bound_host_lost,
    _bound_resize,
    _bound_scheduled,
)
"""Ordered: the first row that returns a verdict decides (`_unbound_pending` decides
every VM without a binding, `_bound_scheduled` every VM with one)."""


def controller_verdict(inputs: ControllerInputs) -> ControllerVerdict:
    return first_match(CONTROLLER_TABLE, inputs)


def controller_vm_status(
    inputs: ControllerInputs,
    *,
    previous_phase: Phase | None,
    previous: Sequence[Condition],
    now: datetime,
) -> dict[str, object]:
    """The controller's part of `status`, applied under its own field manager.

    Before binding the controller writes the phase and the summary conditions; at binding
    it writes host, placement and Scheduled and hands phase, Ready and Reconciling over to
    the agent (which takes them with its first write); when the host is lost it takes the
    phase and Ready back, to Unknown, so no stale Running survives a dead host.
    """
    v = controller_verdict(inputs)
    status: dict[str, object] = {"observedGeneration": inputs.generation}
    binding = inputs.binding
    if binding is not None:
        status["host"] = binding.host
        if binding.placement is not None:
            status["placement"] = binding.placement.to_wire()
        if inputs.eviction is not None:
            status["eviction"] = inputs.eviction
    if v.phase is not None:
        status["phase"] = lifecycle.check_transition(previous_phase, v.phase)
    status["conditions"] = wire(previous, v.conditions, generation=inputs.generation, now=now)
    if inputs.last_migration is not None:
        status["lastMigration"] = inputs.last_migration
    return status
