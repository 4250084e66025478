"""Emptying a host for maintenance: what to do with each VM still on it, and the progress.

Pure. The controller calls `step` for every VM bound to a host whose `spec.maintenance` is
true (on each host check, so a failed step is retried) and `progress` for the host's
`status.drain`. Each VM's `evictionStrategy` decides, as in KubeVirt:

- LiveMigrate: a running VM gets a MigrationJob; a VM that is not running (stopped,
  starting, failed) has nothing to migrate and moves cold instead, and so does a VM on a
  hypervisor type without live migration (an LXC container), as under Shutdown. After
  `MAX_ATTEMPTS` failed migrations the drain is Blocked on it (the jobs say why); an
  admin resolves it.
- Shutdown: the guest is shut down gracefully here and, if its run strategy wants it
  running, placed and started elsewhere (a cold move).
- None: the VM stays; the drain is Blocked until the admin moves or deletes it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from kubevisor.api.virtualmachine import EvictionStrategy, Phase

MAX_ATTEMPTS = 3
LIVE_PHASES: frozenset[Phase] = frozenset({"Running", "Paused", "Migrating"})


class Step(enum.Enum):
    MIGRATE = "migrate"  # create a MigrationJob
    EVICT = "evict"  # ask the agent to stop it here, then place it again
    WAIT = "wait"  # a migration or an eviction is under way
    BLOCKED = "blocked"  # it cannot leave without an admin


@dataclass(frozen=True, slots=True)
class Resident:
    """A VM bound to the draining host, as the controller sees it."""

    name: str
    strategy: EvictionStrategy
    phase: Phase | None
    migrating: bool = False
    """A MigrationJob for it is in flight."""
    evicting: bool = False
    """The controller has asked its agent to stop it."""
    failed_migrations: int = 0
    """MigrationJobs of this drain that failed for it."""
    live_migration: bool = True
    """Its host's hypervisor type can live-migrate (`core.hypervisors`)."""


def step(vm: Resident) -> Step:
    if vm.migrating or vm.evicting:
        return Step.WAIT
    if vm.strategy == "None":
        return Step.BLOCKED
    if vm.strategy == "LiveMigrate" and vm.live_migration and vm.phase in LIVE_PHASES:
        return Step.BLOCKED if vm.failed_migrations >= MAX_ATTEMPTS else Step.MIGRATE
    return Step.EVICT


@dataclass(frozen=True, slots=True)
class Progress:
    phase: str  # Draining, Drained, Blocked
    remaining: int
    migrating: int
    stopping: int
    blocked: int
    message: str

    def to_wire(self) -> dict[str, object]:
        return {
            "phase": self.phase,
            "remaining": self.remaining,
            "migrating": self.migrating,
            "stopping": self.stopping,
            "blocked": self.blocked,
            "message": self.message,
        }


def _why_blocked(vm: Resident) -> str:
    if vm.strategy == "None":
        return f"{vm.name} (evictionStrategy None)"
    return f"{vm.name} ({vm.failed_migrations} failed migrations)"


def progress(residents: Sequence[Resident]) -> Progress:
    """The host's `status.drain` for the VMs still bound to it."""
    steps = [step(vm) for vm in residents]
    migrating = sum(vm.migrating for vm in residents)
    stopping = sum(vm.evicting for vm in residents)
    blocked = [vm for vm, s in zip(residents, steps, strict=True) if s is Step.BLOCKED]
    if not residents:
        return Progress("Drained", 0, 0, 0, 0, "no VMs left on the host")
    message = f"{len(residents)} VMs left: {migrating} migrating, {stopping} stopping"
    if blocked:
        names = ", ".join(_why_blocked(vm) for vm in blocked)
        message += f"; blocked by {names}"
    phase = "Blocked" if len(blocked) == len(residents) else "Draining"
    return Progress(phase, len(residents), migrating, stopping, len(blocked), message)
