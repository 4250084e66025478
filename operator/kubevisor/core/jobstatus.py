"""MigrationJob status as one pure function of explicit inputs: the controller's part.

The controller moves a job forward one step at a time (`handlers/migrations.py`); each
step says what it decided as a `Step` and `job_status` turns it into the status the
controller applies under its own field manager. The agents write `targetAgent`,
`transfer` and `progress` under theirs; everything else is the controller's:

- the phase, checked against `core.migration.check_transition` (a job decided in the
  step that first sees it was Pending all along);
- `source`, `target`, `targetPlacement`, `startTime` and `completionTime`, carried from
  the current status into every write (server-side apply drops a field its manager
  leaves out) unless the step sets them anew;
- `reason`: why the job waits, failed or was cancelled; kept while the phase stays;
- Ready, Reconciling and Stalled from the phase, by the `SUMMARY` table, with the
  step's reason as their message (or "the migration is PHASE").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubevisor.api import conditions as cond
from kubevisor.api import schema
from kubevisor.api.conditions import Condition
from kubevisor.api.migrationjob import Phase
from kubevisor.core import migration
from kubevisor.core.conditions import Row, truth, wire

CARRIED = ("source", "target", "targetPlacement", "startTime", "completionTime")
"""The controller's status fields that outlive the step that set them."""


@dataclass(frozen=True, slots=True)
class Summary:
    """The kstatus conditions of a phase: Ready, Reconciling, Stalled."""

    ready: bool
    reconciling: bool
    stalled: bool


SUMMARY: Mapping[Phase, Summary] = {
    "Pending": Summary(ready=False, reconciling=True, stalled=False),
    "Scheduling": Summary(ready=False, reconciling=True, stalled=False),
    "Preparing": Summary(ready=False, reconciling=True, stalled=False),
    "Running": Summary(ready=False, reconciling=True, stalled=False),
    "Succeeded": Summary(ready=True, reconciling=False, stalled=False),
    "Failed": Summary(ready=False, reconciling=False, stalled=True),
    # Cancelled is neither done well nor stuck: nothing is left to do for it.
    "Cancelled": Summary(ready=False, reconciling=False, stalled=False),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """What one step of the controller decided about a job."""

    phase: Phase
    reason: str | None = None
    """Why a Pending job waits (a concurrency limit), or why it ended as it did."""
    source: str | None = None
    target: str | None = None
    target_placement: Mapping[str, Any] | None = None
    """The claim on the target as `PlacementStatus` wire dict."""
    start_time: datetime | None = None
    completion_time: datetime | None = None


def job_status(
    step: Step, *, current: Mapping[str, Any], generation: int, now: datetime
) -> dict[str, Any]:
    """The controller's part of the job's status after `step`, as the wire dict it
    applies; `current` is the status as the API server holds it now. Raises
    `migration.IllegalTransition` for a phase change the job's lifecycle forbids."""
    old_phase = current.get("phase")
    migration.check_transition(old_phase or "Pending", step.phase)
    status: dict[str, Any] = {
        name: current[name] for name in CARRIED if current.get(name) is not None
    }
    status.update(_set_by(step))
    status["phase"] = step.phase
    status["observedGeneration"] = generation
    if step.reason is not None:
        status["reason"] = step.reason
    elif current.get("reason") and step.phase == old_phase:
        status["reason"] = current["reason"]
    previous = [Condition.model_validate(c) for c in current.get("conditions") or []]
    status["conditions"] = wire(
        previous, _rows(step.phase, step.reason), generation=generation, now=now
    )
    return status


def _set_by(step: Step) -> dict[str, Any]:
    """The carried fields `step` sets anew."""
    fields: dict[str, Any] = {
        "source": step.source,
        "target": step.target,
        "targetPlacement": dict(step.target_placement)
        if step.target_placement is not None
        else None,
        "startTime": schema.timestamp(step.start_time) if step.start_time else None,
        "completionTime": schema.timestamp(step.completion_time) if step.completion_time else None,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _rows(phase: Phase, why: str | None) -> tuple[Row, ...]:
    summary = SUMMARY[phase]
    message = why or f"the migration is {phase}"
    return (
        Row(cond.READY, truth(summary.ready), phase, message),
        Row(cond.RECONCILING, truth(summary.reconciling), phase, message),
        Row(cond.STALLED, truth(summary.stalled), phase, message),
    )


def last_migration(*, job: str, source: str, target: str, now: datetime) -> dict[str, str]:
    """`status.lastMigration` of the VM job `job` moved from `source` to `target`."""
    return {"job": job, "source": source, "target": target, "completionTime": schema.timestamp(now)}
