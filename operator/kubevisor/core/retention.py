"""Snapshot schedules decided: when a snapshot falls due, its name, which snapshots of a
schedule to delete, and the schedule's status. All pure, from explicit inputs (the clock
included); handlers/snapshotschedules.py performs what `plan` returns.

A schedule's next snapshot falls due at the first cron time after its last one (after its
creation for the first): one pass creates at most one snapshot, the one of the latest due
time, so a controller that was down for days does not catch up with a burst. The name is
made of the schedule's name and that due time, so a restart, a retried pass or a second
controller creates the same object (the API server refuses the second create).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from kubevisor.api.conditions import READY
from kubevisor.api.schema import parse_timestamp, timestamp
from kubevisor.api.wire import API_VERSION, RESTORE_ANNOTATION, SCHEDULE_LABEL, SNAPSHOTS
from kubevisor.core import conditions
from kubevisor.core.conditions import Row

INVALID_SCHEDULE = "InvalidSchedule"
NAME_TOO_LONG = "NameTooLong"
SUSPENDED = "Suspended"
VM_NOT_FOUND = "VMNotFound"
SCHEDULED = "Scheduled"

MAX_NAME = 63
"""Longest schedule name: it is the value of SCHEDULE_LABEL on its snapshots."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What one pass over a schedule does: create `create` (a VirtualMachineSnapshot, or
    nothing), delete the snapshots named `delete`, then apply `status`."""

    create: dict[str, Any] | None
    delete: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def valid(expression: str) -> bool:
    """Whether croniter reads `expression` (the CRD's CEL rule checks only its shape)."""
    return bool(croniter.is_valid(expression))


def due(expression: str, *, after: datetime, now: datetime) -> datetime | None:
    """The latest cron time of `expression` in (`after`, `now`], None when there is none
    (not due yet, or the clock went back behind `after`)."""
    first: datetime = croniter(expression, after).get_next(datetime)
    if first > now:
        return None
    latest: datetime = croniter(expression, now).get_prev(datetime)
    following: datetime = croniter(expression, latest).get_next(datetime)
    if following <= now:
        latest = following
    return max(first, latest)


def following(expression: str, *, after: datetime) -> datetime:
    """The first cron time of `expression` after `after`."""
    found: datetime = croniter(expression, after).get_next(datetime)
    return found


def snapshot_name(schedule: str, moment: datetime) -> str:
    """The snapshot a schedule takes for the due time `moment`: `<schedule>-YYYYMMDD-HHMM`."""
    return f"{schedule}-{moment.astimezone(UTC):%Y%m%d-%H%M}"


def snapshot(schedule: Mapping[str, Any], moment: datetime) -> dict[str, Any]:
    """The VirtualMachineSnapshot of `schedule` due at `moment`, labelled with the schedule.
    No owner reference: deleting a schedule keeps the snapshots it took (as Nova keeps
    backups), `kubectl delete vmsnap -l kubevisor.io/snapshot-schedule=NAME` removes them."""
    meta = schedule["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": SNAPSHOTS.kind,
        "metadata": {
            "name": snapshot_name(meta["name"], moment),
            "namespace": meta["namespace"],
            "labels": {SCHEDULE_LABEL: meta["name"]},
        },
        "spec": {"vm": schedule["spec"]["vm"]},
    }


def in_use(vms: Iterable[Mapping[str, Any]]) -> set[str]:
    """Names of the snapshots the VMs `vms` (of one namespace) use, which retention never
    deletes: the one a VM's restore annotation (`SNAPSHOT[@REQUEST]`) names. A clone's
    `source.snapshot` belongs here too once VMs have it."""
    used: set[str] = set()
    for vm in vms:
        value = ((vm.get("metadata") or {}).get("annotations") or {}).get(RESTORE_ANNOTATION)
        if value:
            used.add(str(value).split("@", 1)[0])
    return used


def expired(
    snapshots: Sequence[Mapping[str, Any]], *, keep: int, used: Collection[str]
) -> list[str]:
    """The snapshots of one schedule to delete, oldest first: the Ready ones beyond the
    newest `keep`, and the Failed ones older than the newest Ready (they hold no image);
    never one in `used`, nor one still Pending or InProgress."""
    ordered = sorted(snapshots, key=_age_key, reverse=True)
    ready = [s for s in ordered if _phase(s) == "Ready"]
    doomed = ready[keep:]
    if ready:
        newest = _age_key(ready[0])
        doomed += [s for s in ordered if _phase(s) == "Failed" and _age_key(s) < newest]
    names = [s["metadata"]["name"] for s in sorted(doomed, key=_age_key)]
    return [name for name in names if name not in used]


def plan(
    schedule: Mapping[str, Any],
    *,
    snapshots: Sequence[Mapping[str, Any]],
    vms: Sequence[Mapping[str, Any]],
    now: datetime,
) -> Plan:
    """One pass over `schedule`, given its snapshots (those labelled with it) and the VMs
    of its namespace, at `now`."""
    meta, spec = schedule["metadata"], schedule["spec"]
    previous = schedule.get("status") or {}
    refusal = _refusal(meta["name"], spec, vms)
    if refusal is not None:
        return Plan(None, [], _status(schedule, previous, now=now, why=refusal))
    last = previous.get("lastSnapshotTime")
    after = parse_timestamp(last or meta["creationTimestamp"])
    moment = due(spec["schedule"], after=after, now=now)
    create = None if moment is None else snapshot(schedule, moment)
    names = {s["metadata"]["name"] for s in snapshots}
    delete = expired(snapshots, keep=int(spec["keep"]), used=in_use(vms))
    wanted = _status(schedule, previous, now=now, why=None) | {
        "nextSnapshotTime": timestamp(following(spec["schedule"], after=moment or after)),
    }
    if create is not None and moment is not None:
        names.add(create["metadata"]["name"])
        wanted |= {
            "lastSnapshot": create["metadata"]["name"],
            "lastSnapshotTime": timestamp(moment),
        }
    wanted["kept"] = len(names) - len(delete)
    return Plan(create, delete, wanted)


def _refusal(
    name: str, spec: Mapping[str, Any], vms: Sequence[Mapping[str, Any]]
) -> tuple[str, str] | None:
    if len(name) > MAX_NAME:
        return NAME_TOO_LONG, f"schedule name is {len(name)} characters, at most {MAX_NAME}"
    if not valid(spec["schedule"]):
        return INVALID_SCHEDULE, f"cron expression {spec['schedule']!r} is not valid"
    if spec.get("suspend"):
        return SUSPENDED, "spec.suspend is true: no snapshots are taken or deleted"
    if not any(vm["metadata"]["name"] == spec["vm"] for vm in vms):
        return VM_NOT_FOUND, f"VirtualMachine {spec['vm']} does not exist"
    return None


def _status(
    schedule: Mapping[str, Any],
    previous: Mapping[str, Any],
    *,
    now: datetime,
    why: tuple[str, str] | None,
) -> dict[str, Any]:
    generation = int(schedule["metadata"].get("generation") or 1)
    reason, message = why or (SCHEDULED, f"snapshots on {schedule['spec']['schedule']!r}")
    row = Row(READY, conditions.truth(why is None), reason, message)
    kept = {k: previous[k] for k in ("lastSnapshot", "lastSnapshotTime") if k in previous}
    return kept | {
        "conditions": conditions.wire(
            conditions.previous(previous), [row], generation=generation, now=now
        ),
        "observedGeneration": generation,
    }


def _phase(snapshot: Mapping[str, Any]) -> str | None:
    return (snapshot.get("status") or {}).get("phase")


def _age_key(snapshot: Mapping[str, Any]) -> tuple[str, str]:
    # RFC 3339 in UTC with whole seconds sorts as text; the name (which holds the due
    # time) breaks ties between snapshots created in the same second.
    meta = snapshot["metadata"]
    return str(meta.get("creationTimestamp") or ""), str(meta["name"])
