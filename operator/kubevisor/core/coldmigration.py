"""Cold migration decisions: how the source agent readies a VM's domain for a cold move.

A cold move (MigrationJob `spec.mode: Cold`) reuses the live path's transfer: the target
prepares as for a live migration, and the source copies the VM's local disks with
libvirt's storage migration (NBD over the hosts' authenticated migration connection, the
top image of each writable local disk: `core.migration.disks_to_copy`). What differs is
the guest: before the transfer the source shuts it down and starts its domain again
*paused*, so no guest instruction runs before the copy. The transfer then moves a guest
that has not booted yet together with the disks it left; on the target it boots from
them with the same domain (UUID, MAC addresses, and the addresses its Networks hold).

Why this instead of copying the files agent to agent: libvirt's NBD copy is the path live
migration already uses, already authenticated (TLS where the hosts hold certificates),
already measured (job statistics, bandwidth cap, progress and timeouts) and already
atomic: until the target's domain runs, the source keeps its domain and disks, so a
failure leaves the VM on the source and its agent boots it there again (the paused
domain's spec asks to run). The price: a cold move needs a hypervisor that migrates
domains at all (QEMU/KVM); an LXC container or a vSphere VM cannot move this way.

Pure: the agent observes the domain, asks `preparation` what to do, and does it.
"""

from __future__ import annotations

import enum

from kubevisor.core import hypervisors
from kubevisor.core.convergence import DomainState


class Step(enum.Enum):
    """One thing the source agent does to a domain before a cold transfer."""

    RESUME = "resume"
    """Resume a paused guest, so it can hear the ACPI power button."""
    SHUTDOWN = "shutdown"
    """Shut the guest down gracefully (destroyed once the agent's grace period ends)."""
    START_PAUSED = "start-paused"
    """Start the domain with its vCPUs stopped: the transfer moves it before it boots."""


def preparation(state: DomainState | None) -> tuple[Step, ...]:
    """The steps that take a domain in libvirt state `state` (None: not defined) to a
    domain started paused that has not booted, ready for the transfer. Raises ValueError
    (the job fails with its message) for a domain that cannot be moved.

    A domain already paused may be a guest the user paused mid-run, so it is resumed and
    shut down like a running one: a guest moved as it was paused would be a live move.
    """
    if state is None:
        raise ValueError("the VM's domain is not defined on the source")
    steps = _PREPARATION.get(state)
    if steps is None:
        raise ValueError(f"the VM's domain is {state.value} on the source: cannot move it cold")
    return steps


_PREPARATION: dict[DomainState, tuple[Step, ...]] = {
    DomainState.RUNNING: (Step.SHUTDOWN, Step.START_PAUSED),
    DomainState.BLOCKED: (Step.SHUTDOWN, Step.START_PAUSED),
    DomainState.SHUTDOWN: (Step.SHUTDOWN, Step.START_PAUSED),
    DomainState.PAUSED: (Step.RESUME, Step.SHUTDOWN, Step.START_PAUSED),
    DomainState.SHUTOFF: (Step.START_PAUSED,),
    DomainState.CRASHED: (Step.START_PAUSED,),
}


MOVES_COLD: frozenset[str] = frozenset({"kvm", "qemu", "test"})
"""Hypervisor types whose driver starts a domain paused and migrates it with its disks:
libvirt's QEMU driver (and the test drivers, which take every path)."""


def refusal(source_type: str) -> str | None:
    """Why a VM on a host of `source_type` cannot move cold, or None when it can (a host
    that reports no type is not judged: libvirt refuses what it cannot do)."""
    if not source_type or source_type in MOVES_COLD:
        return None
    why = hypervisors.NO_LIVE_MIGRATION.get(source_type, "its driver cannot start a VM paused")
    return (
        f"{source_type} hosts cannot move VMs cold either: the cold move starts the domain "
        f"paused and copies its disks with libvirt's migration ({why}); stop the VM and "
        "start it on another host instead"
    )
