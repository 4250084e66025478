"""The controller's snapshot schedules: one pass per VirtualMachineSnapshotSchedule and
timer tick (handlers/operator.py) performs what `core.retention.plan` decides: create the
snapshot that fell due, delete the snapshots beyond `keep`, apply the status on change.

The snapshot's name comes from the schedule and the due time, so a pass repeated after a
crash, or run by a second controller, finds it created (409) instead of making another.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from kubevisor.core import conditions, retention
from kubevisor.kube.client import Object
from kubevisor.kube.snapshotschedules import ScheduleApi

log = logging.getLogger("kubevisor.controller")


async def reconcile(
    api: ScheduleApi, schedule: Object, *, vms: Sequence[Object], now: datetime
) -> retention.Plan:
    """One pass over `schedule`; `vms` are the VMs of its namespace. Returns the plan
    performed (for the caller's log and tests)."""
    meta = schedule["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    snapshots = await api.snapshots(namespace, name) if len(name) <= retention.MAX_NAME else []
    plan = retention.plan(schedule, snapshots=snapshots, vms=vms, now=now)
    if plan.create is not None and await api.create(namespace, plan.create):
        log.info("%s/%s: created snapshot %s", namespace, name, plan.create["metadata"]["name"])
    uids = {s["metadata"]["name"]: s["metadata"]["uid"] for s in snapshots}
    for doomed in plan.delete:
        if await api.delete(namespace, doomed, uid=uids[doomed]):
            log.info("%s/%s: deleted snapshot %s (beyond keep)", namespace, name, doomed)
    if conditions.differs(schedule.get("status") or {}, plan.status):
        await api.apply_status(namespace, name, plan.status)
    return plan
