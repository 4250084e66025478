"""VM lifecycle: what each run strategy wants, and which phase changes are legal.

Pure tables consulted by the agent (should this domain run now?), by status
computation (is this phase change one we can explain?) and by the controller's failover
(does a VM restart elsewhere after its host is lost, and with which disks?). Run
strategies have KubeVirt's meanings:

| strategy       | start when created | restart after guest shutdown | after a crash |
|----------------|--------------------|------------------------------|---------------|
| Always         | yes                | yes                          | yes           |
| RerunOnFailure | yes                | no (it succeeded)            | yes           |
| Once           | yes                | no                           | no            |
| Manual         | yes                | no                           | no            |
| Halted         | no (and stop it)   | no                           | no            |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, get_args

from kubevisor.api.virtualmachine import Phase, RunStrategy, VmStorage

__all__ = [
    "FAILING_OVER",
    "PHASES",
    "Exit",
    "IllegalTransition",
    "Intent",
    "Notice",
    "Phase",
    "RunStrategy",
    "check_transition",
    "failover_notice",
    "intent",
    "is_bound_phase",
    "restarts_after_host_loss",
]


class Exit(StrEnum):
    """How a guest's last run ended, as far as the hypervisor can tell."""

    NONE = "none"
    """Never ran, or runs now."""
    SHUTDOWN = "shutdown"
    """The guest powered itself off, or obeyed a graceful shutdown."""
    CRASHED = "crashed"
    """The guest or QEMU crashed, or the domain failed to start."""
    DESTROYED = "destroyed"
    """Stopped hard from outside (by kubevisor or an operator with virsh)."""


@dataclass(frozen=True, slots=True)
class Intent:
    """What the run strategy wants right now."""

    run: bool
    restart: bool
    """True when running means starting the guest again after an earlier run ended."""


_RESTART_AFTER: Mapping[RunStrategy, frozenset[Exit]] = {
    "Always": frozenset({Exit.SHUTDOWN, Exit.CRASHED, Exit.DESTROYED}),
    "RerunOnFailure": frozenset({Exit.CRASHED}),
    "Once": frozenset(),
    "Manual": frozenset(),
    "Halted": frozenset(),
}


def intent(strategy: RunStrategy, *, last_exit: Exit) -> Intent:
    """Whether a VM with `strategy` whose guest's last run ended with `last_exit` should run."""
    if strategy == "Halted":
        return Intent(run=False, restart=False)
    if last_exit is Exit.NONE:
        return Intent(run=True, restart=False)
    restart = last_exit in _RESTART_AFTER[strategy]
    return Intent(run=restart, restart=restart)


def restarts_after_host_loss(strategy: RunStrategy) -> bool:
    """Whether a VM whose host died should be started elsewhere: to its guest the host's
    death is a crash, so the strategies that restart after a crash (Always, RerunOnFailure)."""
    return intent(strategy, last_exit=Exit.CRASHED).run


FAILING_OVER = "FailingOver"


@dataclass(frozen=True, slots=True)
class Notice:
    """A Kubernetes event to record on the VM."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def failover_notice(
    *, lost: str, target: str, storage: VmStorage | None, target_storage: str | None
) -> Notice:
    """Where a VM restarts after its host `lost` was lost, and what becomes of its disks.

    The controller's failover asks once placement chose `target`. `storage` is where the
    VM's agent last said its disks live (None: never said, so on the host's own disk);
    `target_storage` the shared storage `target` mounts. Only a host with the same shared
    storage takes the disks as they are; anywhere else the VM starts over from its image,
    which is worth a Warning.
    """
    head = f"host {lost} was lost: restarts on {target}"
    shared = (
        storage.shared_storage if storage is not None and storage.location == "Shared" else None
    )
    if shared is not None and shared == target_storage:
        return Notice("Normal", FAILING_OVER, f"{head} with its disks from shared storage {shared}")
    if shared is not None:
        return Notice(
            "Warning",
            FAILING_OVER,
            f"{head} from its image: {target} lacks shared storage {shared}, so the "
            "changes to its disks there are not used",
        )
    return Notice(
        "Warning",
        FAILING_OVER,
        f"{head} from its image: the changes to its local disks on {lost} are lost",
    )


# The API's own vocabularies: one definition, read by the CRD schema and by this table.
PHASES: tuple[Phase, ...] = get_args(Phase)

_BOUND: frozenset[Phase] = frozenset(
    {"Starting", "Running", "Paused", "Stopping", "Stopped", "Migrating", "Failed"}
)

# Every phase may move to itself, to Terminating (deletion) and to Unknown (host lost);
# a VM that lost its host (Unknown) may go anywhere the evidence says. The rest:
_NEXT: Mapping[Phase, frozenset[Phase]] = {
    "Pending": frozenset({"Unschedulable", "Scheduled", "Stopped"}),
    "Unschedulable": frozenset({"Pending", "Scheduled", "Stopped"}),
    "Scheduled": frozenset({"Pending", "Starting", "Running", "Paused", "Stopped", "Failed"}),
    "Starting": frozenset({"Running", "Paused", "Stopping", "Stopped", "Failed", "Pending"}),
    "Running": frozenset({"Paused", "Stopping", "Stopped", "Failed", "Migrating", "Starting"}),
    "Paused": frozenset({"Running", "Stopping", "Stopped", "Failed", "Migrating"}),
    "Stopping": frozenset({"Stopped", "Failed", "Running", "Paused", "Starting"}),
    "Stopped": frozenset(
        {"Starting", "Running", "Paused", "Pending", "Unschedulable", "Scheduled", "Failed"}
    ),
    "Migrating": frozenset({"Running", "Paused", "Failed", "Stopped", "Stopping", "Starting"}),
    "Failed": frozenset(
        {"Starting", "Running", "Paused", "Stopped", "Pending", "Unschedulable", "Scheduled"}
    ),
    "Terminating": frozenset({"Stopped"}),
    "Unknown": frozenset(PHASES),
}


class IllegalTransition(ValueError):
    """A phase change the lifecycle does not allow: a bug in whoever computed it."""


def check_transition(old: Phase | None, new: Phase) -> Phase:
    """Return `new` if a VM may move from `old` to it, else raise IllegalTransition."""
    if old is None or old == new or new in ("Terminating", "Unknown"):
        return new
    if new not in _NEXT[old]:
        raise IllegalTransition(f"a VM cannot go from {old} to {new}")
    return new


def is_bound_phase(phase: Phase | None) -> bool:
    """Phases that only the agent of the bound host writes."""
    return phase in _BOUND
