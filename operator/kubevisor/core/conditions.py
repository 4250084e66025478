"""The conditions of a status: rows in, wire dicts out, transition times kept stable.

Every status function in core (`core.status` for VirtualMachines, `core.hosts` for
HypervisorHosts, `core.jobstatus` for MigrationJobs) lists its conditions as `Row`s and
turns them into the wire list with `wire`; the writers at the edges parse what the API
server holds with `previous` and apply a status only when `differs` says it changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from kubevisor.api import conditions as cond
from kubevisor.api.conditions import Condition, ConditionStatus


class Row(NamedTuple):
    """One condition a status function wants: type, status, reason, message."""

    type: str
    status: ConditionStatus
    reason: str
    message: str


def truth(holds: bool) -> ConditionStatus:
    """A condition status for a yes/no question."""
    return "True" if holds else "False"


def previous(status: Mapping[str, Any] | None) -> list[Condition]:
    """The conditions of a status as the API server holds it (a wire dict, or None)."""
    return [Condition.model_validate(c) for c in (status or {}).get("conditions") or []]


def make_condition(
    previous: Sequence[Condition],
    *,
    type_: str,
    status: ConditionStatus,
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


def wire(
    previous: Sequence[Condition], rows: Iterable[Row], *, generation: int, now: datetime
) -> list[dict[str, Any]]:
    """`status.conditions` for `rows`, in their order, each through `make_condition`."""
    return [
        make_condition(
            previous,
            type_=row.type,
            status=row.status,
            reason=row.reason,
            message=row.message,
            generation=generation,
            now=now,
        ).to_wire()
        for row in rows
    ]


def differs(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether applying `wanted` would change `current` (conditions compared by type, as
    the model reads them; every other field as it is)."""
    for field, value in wanted.items():
        if field == "conditions":
            have = {
                c["type"]: Condition.model_validate(c).to_wire()
                for c in current.get("conditions") or []
            }
            if any(have.get(c["type"]) != Condition.model_validate(c).to_wire() for c in value):
                return True
        elif current.get(field) != value:
            return True
    return False
