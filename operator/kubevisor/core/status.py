"""VirtualMachine status as one pure function of explicit inputs.

`bound_vm_status` is what the agent of the bound host writes: the phase after binding,
`status.domain`, `created`, `restartCount`, `imagePulls`, and the conditions it owns
(Ready, Paused, Reconciling, Stalled, RestartRequired, LimitsEnforced, and ImagePulling for
a VM whose disks download their images). The phase comes from an ordered first-match
table: the first row whose test holds decides, so the precedence is visible in one place.

Conditions follow the kstatus conventions (research/ux.md section 1): Reconciling while
work is in flight, Stalled when it cannot progress, Ready as the summary, and a stopped
VM whose run strategy wants it stopped is Ready, so GitOps tools do not wait forever.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubevisor.api import conditions as cond
from kubevisor.api.conditions import Condition
from kubevisor.api.virtualmachine import (
    DomainStatus,
    ImagePull,
    PlacementStatus,
    VirtualMachineSpec,
)
from kubevisor.core import lifecycle
from kubevisor.core.convergence import DomainObservation, DomainState, last_exit
from kubevisor.core.lifecycle import Exit, Phase

RESTART_REQUIRED = "RestartRequired"
LIMITS_ENFORCED = "LimitsEnforced"
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


@dataclass(frozen=True, slots=True, kw_only=True)
class PullFailure:
    """Why the last download of a disk's image failed (the agent's image cache says)."""

    permanent: bool
    reason: str
    """DownloadFailed or DiskFull (retried); ChecksumMismatch, ImageNotFound,
    DownloadRefused, DestinationRefused, ImageTooLarge or CorruptImage (permanent: the
    spec, the server or the host's rules must change)."""
    message: str
    retry_in: float | None = None
    """Seconds until the agent downloads it again, for a retried failure."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePullState:
    """A disk whose source image is not in the host's cache yet, and its download so far."""

    disk: str
    url: str
    received_bytes: int = 0
    total_bytes: int | None = None
    """As the server announced it (Content-Length); None when it did not."""
    attempts: int = 1
    failure: PullFailure | None = None
    """Set when the last attempt failed; None while it runs."""


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
    """The host this agent is live-migrating the domain to, while it does."""
    evicting: str | None = None
    """Why the controller asked for the domain to be stopped here (status.eviction)."""
    unenforced: tuple[str, ...] = ()
    """Limits of the spec this host cannot enforce (`domain.unenforced_limits`)."""
    pulls: tuple[ImagePullState, ...] = ()
    """The disks whose images must be downloaded before the domain can start; empty when
    every image is cached (or the agent is not about to start the domain)."""

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


def _deleting(i: Inputs) -> Verdict | None:
    if not i.deleting:
        return None
    return Verdict(
        phase="Terminating",
        ready=False,
        reason="Deleting",
        message="shutting down and removing the domain",
        reconciling=True,
    )


def _permanent_error(i: Inputs) -> Verdict | None:
    if i.error is None or not i.error.permanent:
        return None
    return Verdict(
        phase="Failed", ready=False, reason=i.error.reason, message=i.error.message, stalled=True
    )


def _evicting(i: Inputs) -> Verdict | None:
    if i.evicting is None:
        return None
    if i.domain is None:
        return Verdict(
            phase="Stopped",
            ready=False,
            reason="Evicted",
            message=f"stopped here ({i.evicting}); waiting to be placed elsewhere",
            reconciling=True,
        )
    return Verdict(
        phase="Stopping",
        ready=False,
        reason="Evicting",
        message=f"shutting the guest down to move it ({i.evicting})",
        reconciling=True,
    )


def _migrating(i: Inputs) -> Verdict | None:
    if i.migrating_to is None or i.state not in (DomainState.RUNNING, DomainState.PAUSED):
        return None
    # Ready stays True: the guest keeps serving while its memory is copied.
    return Verdict(
        phase="Migrating",
        ready=True,
        reason="Migrating",
        message=f"live-migrating to host {i.migrating_to}",
        reconciling=True,
    )


def _pulling_images(i: Inputs) -> Verdict | None:
    if not i.pulls:
        return None
    pulling, reason, message = pull_summary(i.pulls)
    if not pulling:
        return Verdict(phase="Failed", ready=False, reason=reason, message=message, stalled=True)
    return Verdict(
        phase="Starting", ready=False, reason="ImagePulling", message=message, reconciling=True
    )


def _no_domain(i: Inputs) -> Verdict | None:
    if i.domain is not None:
        return None
    if i.wants_run:
        return Verdict(
            phase="Starting",
            ready=False,
            reason="Starting",
            message="creating the domain",
            reconciling=True,
        )
    return Verdict(
        phase="Stopped", ready=True, reason="Stopped", message="stopped, as the run strategy asks"
    )


def _running(i: Inputs) -> Verdict | None:
    if i.state not in (DomainState.RUNNING, DomainState.BLOCKED):
        return None
    if not i.wants_run:
        return Verdict(
            phase="Stopping",
            ready=False,
            reason="Stopping",
            message="shutting the guest down",
            reconciling=True,
        )
    if i.spec.paused:
        return Verdict(
            phase="Running",
            ready=False,
            reason="Pausing",
            message="pausing the guest",
            reconciling=True,
        )
    return Verdict(phase="Running", ready=True, reason="Running", message="the domain is running")


def _paused(i: Inputs) -> Verdict | None:
    if i.state is not DomainState.PAUSED:
        return None
    if i.spec.paused:
        return Verdict(
            phase="Paused", ready=True, reason="Paused", message="paused, as spec.paused asks"
        )
    return Verdict(
        phase="Paused",
        ready=False,
        reason="Resuming",
        message="resuming the guest",
        reconciling=True,
    )


def _shutting_down(i: Inputs) -> Verdict | None:
    if i.state is not DomainState.SHUTDOWN:
        return None
    return Verdict(
        phase="Stopping",
        ready=False,
        reason="Stopping",
        message="the guest is shutting down",
        reconciling=True,
    )


def _ended(i: Inputs) -> Verdict | None:
    if i.wants_run:
        return Verdict(
            phase="Starting",
            ready=False,
            reason="Restarting",
            message="starting the guest again",
            reconciling=True,
        )
    if last_exit(i.domain) is Exit.CRASHED:
        return Verdict(
            phase="Failed",
            ready=False,
            reason="Crashed",
            message=f"the guest crashed ({i.domain.reason if i.domain else 'unknown'}) and "
            f"runStrategy {i.spec.run_strategy} does not restart it",
            stalled=True,
        )
    return Verdict(
        phase="Stopped", ready=True, reason="Stopped", message="stopped, as the run strategy asks"
    )


PHASE_TABLE: Sequence[Callable[[Inputs], Verdict | None]] = (
    _deleting,
    _evicting,
    _permanent_error,
    _migrating,
    _pulling_images,
    _no_domain,
    _running,
    _paused,
    _shutting_down,
    _ended,
)
"""Ordered: the first row that returns a verdict decides."""


def verdict(inputs: Inputs) -> Verdict:
    for row in PHASE_TABLE:
        found = row(inputs)
        if found is not None:
            return found
    raise AssertionError("the last row of PHASE_TABLE always decides")


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
    wanted = [
        (cond.READY, v.ready, v.reason, v.message),
        (
            cond.PAUSED,
            paused,
            "Paused" if paused else "NotPaused",
            "the guest's vCPUs are paused" if paused else "the guest is not paused",
        ),
        (
            cond.RECONCILING,
            v.reconciling,
            v.reason if v.reconciling else "Done",
            v.message if v.reconciling else "nothing in flight",
        ),
        (
            cond.STALLED,
            v.stalled,
            v.reason if v.stalled else "NotStalled",
            v.message if v.stalled else "making progress",
        ),
        (
            RESTART_REQUIRED,
            restart_required,
            "SpecChanged" if restart_required else "UpToDate",
            "vCPUs, memory, NUMA, disks, boot or networks changed; restart the VM to apply them"
            if restart_required
            else "the domain matches the spec",
        ),
        (
            LIMITS_ENFORCED,
            not inputs.unenforced,
            "NotEnforced" if inputs.unenforced else "Enforced",
            "; ".join(inputs.unenforced) or "the host enforces every limit of the spec",
        ),
    ]
    sourced = [disk.name for disk in inputs.spec.disks if disk.source is not None]
    if sourced:
        wanted.append((cond.IMAGE_PULLING, *_image_pulling(inputs.pulls, sourced)))
    conditions = [
        set_condition(
            previous, type_=t, status=s, reason=r, message=m, generation=inputs.generation, now=now
        )
        for t, s, r, m in wanted
    ]
    status: dict[str, object] = {
        "phase": lifecycle.check_transition(previous_phase, v.phase),
        "created": inputs.domain is not None,
        "restartCount": restart_count,
        "observedGeneration": inputs.generation,
        "conditions": [c.to_wire() for c in conditions],
    }
    if sourced:
        # Always written, empty included: a finished download must leave the list.
        status["imagePulls"] = image_pulls(inputs.pulls)
    if inputs.domain is not None:
        status["domain"] = DomainStatus(
            uuid=inputs.domain.uuid, state=inputs.domain.state.value, reason=inputs.domain.reason
        ).to_wire()
    return status


def pull_summary(pulls: Sequence[ImagePullState]) -> tuple[bool, str, str]:
    """(still pulling, reason, message) of the disks waiting for their images.

    Not pulling once one download failed for good: its reason (ChecksumMismatch, ...)
    decides. Otherwise the first retried failure's reason (DownloadFailed, DiskFull), or
    Pulling; the message has one part per disk, as `disk NAME: ...`.
    """
    message = "; ".join(f"disk {p.disk}: {_pull_part(p)}" for p in pulls)
    failures = [p.failure for p in pulls if p.failure is not None]
    permanent = [f for f in failures if f.permanent]
    if permanent:
        return False, permanent[0].reason, message
    return True, failures[0].reason if failures else "Pulling", message


def _pull_part(pull: ImagePullState) -> str:
    attempt = f", attempt {pull.attempts}" if pull.attempts > 1 else ""
    failure = pull.failure
    if failure is None:
        received = _mib(pull.received_bytes)
        if pull.total_bytes:
            share = min(100, round(100 * pull.received_bytes / pull.total_bytes))
            received += f" of {_mib(pull.total_bytes)} ({share}%)"
        return f"{received} from {pull.url}{attempt}"
    if failure.permanent or failure.retry_in is None:
        return f"{failure.message}{attempt}"
    return f"{failure.message}{attempt}; retrying in {failure.retry_in:.0f}s"


def _mib(count: int) -> str:
    return f"{count / (1 << 20):.1f} MiB"


def _image_pulling(
    pulls: Sequence[ImagePullState], sourced: Sequence[str]
) -> tuple[bool, str, str]:
    """The ImagePulling condition's (status, reason, message)."""
    if not pulls:
        return False, "Pulled", "; ".join(f"disk {name}: image cached" for name in sourced)
    return pull_summary(pulls)


def image_pulls(pulls: Sequence[ImagePullState]) -> list[dict[str, Any]]:
    """status.imagePulls: the downloads running or to be retried (not those failed for
    good: nothing is in flight for them)."""
    return [
        ImagePull(
            disk=p.disk,
            url=p.url,
            received_bytes=p.received_bytes,
            total_bytes=p.total_bytes,
            attempts=p.attempts,
        ).to_wire()
        for p in pulls
        if p.failure is None or not p.failure.permanent
    ]


def set_condition(
    previous: Sequence[Condition],
    *,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> Condition:
    """A condition whose lastTransitionTime moves only when its status flips."""
    return make_condition(
        previous,
        type_=type_,
        status="True" if status else "False",
        reason=reason,
        message=message,
        generation=generation,
        now=now,
    )


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
    """The placement engine's explanation when no host fits."""
    host_lost: str | None = None
    """Why the bound host is not Ready (its heartbeat expired), if it is not."""
    migrated_from: str | None = None
    """Set when `binding` is the target of a live migration that just completed."""
    last_migration: dict[str, Any] | None = None
    """status.lastMigration as the wire dict; carried in every write (the controller owns it)."""
    eviction: dict[str, Any] | None = None
    """status.eviction as the wire dict: the agent is to stop the domain on the bound host."""


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
    rows: list[tuple[str, str, str, str]]  # type, status, reason, message
    status: dict[str, object] = {"observedGeneration": inputs.generation}
    binding = inputs.binding
    if binding is None:
        if inputs.spec.run_strategy == "Halted":
            phase: Phase = "Stopped"
            rows = [
                (cond.READY, "True", "Stopped", "stopped, as the run strategy asks"),
                (cond.RECONCILING, "False", "Done", "nothing in flight"),
                (cond.STALLED, "False", "NotStalled", "making progress"),
            ]
        elif inputs.unschedulable is not None:
            phase = "Unschedulable"
            rows = [
                (cond.SCHEDULED, "False", "Unschedulable", inputs.unschedulable),
                (cond.READY, "False", "Unschedulable", inputs.unschedulable),
                # Not Stalled: a host may be added or freed at any time, and then it runs.
                (cond.RECONCILING, "True", "Unschedulable", inputs.unschedulable),
                (cond.STALLED, "False", "NotStalled", "waiting for capacity"),
            ]
        else:
            phase = "Pending"
            rows = [
                (cond.READY, "False", "Pending", "waiting for placement"),
                (cond.RECONCILING, "True", "Scheduling", "waiting for placement"),
                (cond.STALLED, "False", "NotStalled", "making progress"),
            ]
    else:
        status["host"] = binding.host
        if binding.placement is not None:
            status["placement"] = binding.placement.to_wire()
        placed = f"placed on host {binding.host}"
        if inputs.eviction is not None:
            status["eviction"] = inputs.eviction
            evicting = f"{placed}; evicting: {inputs.eviction.get('reason')}"
            return _with_conditions(
                status, inputs, [(cond.SCHEDULED, "True", "Evicting", evicting)], previous, now
            )
        if inputs.migrated_from is not None:
            # The domain already runs there: phase, Ready and Reconciling stay the agent's.
            moved = f"live-migrated from host {inputs.migrated_from} to host {binding.host}"
            return _with_conditions(
                status, inputs, [(cond.SCHEDULED, "True", "Migrated", moved)], previous, now
            )
        if inputs.host_lost is not None:
            phase = "Unknown"
            rows = [
                (cond.SCHEDULED, "True", "Scheduled", placed),
                (cond.READY, "Unknown", "HostNotReady", inputs.host_lost),
            ]
        else:
            phase = "Scheduled"
            rows = [
                (cond.SCHEDULED, "True", "Scheduled", placed),
                (cond.READY, "False", "Scheduled", f"{placed}; waiting for its agent"),
                (cond.RECONCILING, "True", "Scheduled", f"{placed}; waiting for its agent"),
            ]
    status["phase"] = lifecycle.check_transition(previous_phase, phase)
    return _with_conditions(status, inputs, rows, previous, now)


def _with_conditions(
    status: dict[str, object],
    inputs: ControllerInputs,
    rows: list[tuple[str, str, str, str]],
    previous: Sequence[Condition],
    now: datetime,
) -> dict[str, object]:
    status["conditions"] = [
        make_condition(
            previous, type_=t, status=s, reason=r, message=m, generation=inputs.generation, now=now
        ).to_wire()
        for t, s, r, m in rows
    ]
    if inputs.last_migration is not None:
        status["lastMigration"] = inputs.last_migration
    return status


def make_condition(
    previous: Sequence[Condition],
    *,
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> Condition:
    """A condition whose lastTransitionTime moves only when its status changes."""
    old = cond.find(list(previous), type_)
    since = old.last_transition_time if old is not None and old.status == status else None
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since or now,
        observed_generation=generation,
    )


def differs(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether applying `wanted` would change `current` (conditions compared by type)."""
    for field, value in wanted.items():
        if field == "conditions":
            have = {
                c["type"]: Condition.model_validate(c).to_wire()
                for c in current.get("conditions") or []
            }
            if any(have.get(c["type"]) != Condition.model_validate(c).to_wire() for c in value):
                return True
        elif field == "placement":
            if PlacementStatus.model_validate(current.get(field) or {}).to_wire() != value:
                return True
        elif current.get(field) != value:
            return True
    return False
