"""The controller's part of a HypervisorHost's status, and the host gauges.

`Controller.check_host` calls `publish` on every tick of a host's timer: Ready from the
heartbeat judgement, Schedulable, and what the placement state holds there (allocatable,
allocated, VM count, drain progress), applied only when it changed. A host the
controller cannot read gets conditions saying why and no figures
(`core.hosts.invalid_host_status`).
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from kubevisor import metrics
from kubevisor.api import quantity
from kubevisor.core import conditions
from kubevisor.core import hosts as hostjudge
from kubevisor.core.hosts import Judgement
from kubevisor.core.placement.state import PlacementState
from kubevisor.kube.client import Kube, Object


async def publish(
    kube: Kube,
    obj: Object,
    *,
    state: PlacementState,
    judgement: Judgement,
    drain: dict[str, object] | None,
    unreadable: str | None,
    now: datetime,
    failover: hostjudge.FailoverNotes | None = None,
) -> Object | None:
    """Apply the controller's status of host `obj` if it changed; returns the host as
    written (None: nothing written)."""
    name = obj["metadata"]["name"]
    spec = obj.get("spec") or {}
    current = obj.get("status") or {}
    generation = int(obj["metadata"].get("generation") or 0)
    if unreadable is not None:
        wanted = hostjudge.invalid_host_status(
            judgement=judgement,
            message=unreadable,
            generation=generation,
            previous=conditions.previous(current),
            now=now,
        )
    elif name not in state:
        return None
    else:
        allocatable, allocated = hostjudge.resources(state.inventory(name), state.usage(name))
        wanted = hostjudge.controller_host_status(
            judgement=judgement,
            unschedulable=bool(spec.get("unschedulable")),
            maintenance=bool(spec.get("maintenance")),
            allocatable=allocatable,
            allocated=allocated,
            vm_count=state.usage(name).vms,
            generation=generation,
            previous=conditions.previous(current),
            now=now,
            drain=drain,
            cpu_set_errors=state.host(name).cpu_set_errors,
            failover=failover,
        )
        inventory = state.inventory(name)
        for resource, total in (
            ("cpu", inventory.vcpu.total + inventory.pcpu.total),
            ("memory", inventory.memory.total * quantity.MI),
            ("disk", inventory.disk.total * quantity.MI),
        ):
            metrics.HOST_CAPACITY.labels(name, resource).set(total)
        for gauge, amounts in (
            (metrics.HOST_ALLOCATABLE, allocatable),
            (metrics.HOST_ALLOCATED, allocated),
        ):
            gauge.labels(name, "cpu").set(amounts.cpu or 0)
            gauge.labels(name, "memory").set(quantity.to_bytes(amounts.memory or "0"))
            gauge.labels(name, "disk").set(quantity.to_bytes(amounts.disk or "0"))
    if not conditions.differs(current, wanted):
        return None
    return await kube.apply_host_status(name, wanted)


CONDITION_STATUSES = ("True", "False", "Unknown")


def count_conditions(obj: Object) -> None:
    """Set kubevisor_host_condition from host `obj`'s conditions, the ones the agent and
    the fencing write as well as the controller's; the controller calls this after every
    status write (the alerts in deploy/manifests/components/alerts read it)."""
    name = obj["metadata"]["name"]
    for condition in (obj.get("status") or {}).get("conditions") or []:
        for status in CONDITION_STATUSES:
            held = 1 if condition.get("status") == status else 0
            metrics.HOST_CONDITION.labels(name, condition["type"], status).set(held)


def forget_conditions(obj: Object) -> None:
    """Drop deleted host `obj`'s kubevisor_host_condition series."""
    name = obj["metadata"]["name"]
    for condition in (obj.get("status") or {}).get("conditions") or []:
        for status in CONDITION_STATUSES:
            # Never counted when the host was deleted before its first check.
            with contextlib.suppress(KeyError):
                metrics.HOST_CONDITION.remove(name, condition["type"], status)
