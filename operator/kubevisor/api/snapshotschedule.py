"""The VirtualMachineSnapshotSchedule custom resource: snapshots of one VM on a cron
schedule, the newest `keep` of them kept (Nova's `backup` with its rotation).

Users create it naming a VM of their namespace; the controller (handlers/
snapshotschedules.py) creates a VirtualMachineSnapshot each time the schedule falls due,
labelled with the schedule's name, and deletes the oldest Ready ones beyond `keep`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import Field, StringConstraints

from kubevisor.api.conditions import Condition, conditions_field, observed_generation_field
from kubevisor.api.schema import ApiModel, ApiObject, ObjectName, rule, validations

KIND: Final = "VirtualMachineSnapshotSchedule"
MAX_KEEP: Final = 100
"""Bound of `keep`: beyond it a schedule is a backup system, not a rotation."""

_FIELD = r"[0-9A-Za-z*?/,-]+"
CRON: Final = rf"^(@(yearly|annually|monthly|weekly|daily|hourly)|{_FIELD}( +{_FIELD}){{4}})$"
"""Five cron fields (minute hour day-of-month month day-of-week) or one @macro; what each
field holds is checked by the controller (croniter), which says so in a condition."""

CronExpression = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class VirtualMachineSnapshotScheduleSpec(ApiModel):
    """Which VM to snapshot, when, and how many snapshots to keep."""

    vm: ObjectName = Field(
        description="Name of the VirtualMachine in this namespace to snapshot.",
    )
    schedule: CronExpression = Field(
        description=(
            "When to snapshot, in UTC: five cron fields (minute hour day-of-month month "
            "day-of-week, e.g. '0 3 * * *') or @hourly, @daily, @weekly, @monthly, @yearly."
        ),
        json_schema_extra=validations(
            rule(
                f"self.matches('{CRON}')",
                "schedule must be five cron fields (minute hour day-of-month month "
                "day-of-week) or one of @hourly, @daily, @weekly, @monthly, @yearly",
            )
        ),
    )
    keep: int = Field(
        ge=1,
        le=MAX_KEEP,
        description="How many Ready snapshots of this schedule to keep; older ones are deleted.",
    )
    suspend: bool = Field(
        default=False, description="True: take no snapshots (and delete none) until false."
    )


class VirtualMachineSnapshotScheduleStatus(ApiModel):
    """Observed state of the schedule, written by the controller."""

    last_snapshot: ObjectName | None = Field(
        default=None, description="The VirtualMachineSnapshot created last."
    )
    last_snapshot_time: datetime | None = Field(
        default=None, description="The due time of the last snapshot created."
    )
    next_snapshot_time: datetime | None = Field(
        default=None, description="When the next snapshot falls due (none while suspended)."
    )
    kept: int | None = Field(
        default=None, ge=0, le=10_000, description="Snapshots of this schedule that exist."
    )
    conditions: list[Condition] = conditions_field(
        "Ready (True while the schedule runs; False with InvalidSchedule or Suspended)."
    )
    observed_generation: int | None = observed_generation_field()


class VirtualMachineSnapshotSchedule(ApiObject):
    """A whole VirtualMachineSnapshotSchedule object, for reading manifests."""

    kind: Literal["VirtualMachineSnapshotSchedule"] = Field(
        default=KIND, description="VirtualMachineSnapshotSchedule."
    )
    spec: VirtualMachineSnapshotScheduleSpec = Field(
        description="Which VM, when, how many to keep."
    )
    status: VirtualMachineSnapshotScheduleStatus | None = Field(
        default=None, description="Observed state."
    )
