"""The source agent's part of a cold migration before the transfer: the guest shut down,
its domain started again paused (`core.coldmigration` says why and in which steps).

Called by the migrator (agent/migration.py) for a job with `spec.mode: Cold`, while the
VM counts as migrating (the agent's reconcile leaves its domain alone). Whatever goes
wrong after this leaves a paused domain that has not booted: once the job ends the
reconcile resumes it there (a fresh boot on the source, on the disks it left).
"""

from __future__ import annotations

import logging

from kubevisor.core import coldmigration
from kubevisor.core.coldmigration import Step
from kubevisor.drivers.base import DomainNotFound, Hypervisor, HypervisorError

log = logging.getLogger("kubevisor.agent.coldmove")


async def ready_for_transfer(
    hypervisor: Hypervisor, uid: str, *, shutdown_grace: float, job: str
) -> None:
    """Take the domain of `uid` to started-paused, not booted; HypervisorError when it
    cannot be (the job fails with the message)."""
    try:
        state = (await hypervisor.state(uid)).state
    except DomainNotFound:
        state = None
    try:
        steps = coldmigration.preparation(state)
    except ValueError as refused:
        raise HypervisorError(str(refused)) from refused
    for step in steps:
        log.info("%s: cold move of %s: %s", job, uid, step.value)
        if step is Step.RESUME:
            await hypervisor.resume(uid)
        elif step is Step.SHUTDOWN:
            outcome = await hypervisor.shutdown(uid, timeout=shutdown_grace)
            log.info("%s: guest of %s shut down: %s", job, uid, outcome.value)
        elif step is Step.START_PAUSED:
            await hypervisor.start(uid, paused=True)
