"""The controller's part of a MigrationJob's status (core/jobstatus.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest

from kubevisor.api.migrationjob import Phase
from kubevisor.core import jobstatus
from kubevisor.core.jobstatus import Step
from kubevisor.core.migration import IllegalTransition

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
STARTED = "2026-12-01T11:58:00Z"
PREPARING: dict[str, Any] = {
    "phase": "Preparing",
    "source": "h1",
    "target": "h2",
    "targetPlacement": {"cells": []},
    "targetAgent": {"ready": True},
    "observedGeneration": 1,
}


def summary(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}


@pytest.mark.parametrize(
    ("step", "ready", "reconciling", "stalled", "message"),
    [
        pytest.param(
            Step(phase="Pending"),
            "False",
            "True",
            "False",
            "the migration is Pending",
            id="Pending",
        ),
        pytest.param(
            Step(phase="Pending", reason="2 migrations in flight (limit 2)"),
            "False",
            "True",
            "False",
            "2 migrations in flight (limit 2)",
            id="Pending-waiting",
        ),
        pytest.param(
            Step(phase="Running"),
            "False",
            "True",
            "False",
            "the migration is Running",
            id="Running",
        ),
        pytest.param(
            Step(phase="Succeeded", reason="migrated"),
            "True",
            "False",
            "False",
            "migrated",
            id="Succeeded",
        ),
        pytest.param(
            Step(phase="Failed", reason="host h2 is not Ready"),
            "False",
            "False",
            "True",
            "host h2 is not Ready",
            id="Failed",
        ),
        pytest.param(
            Step(phase="Cancelled", reason="cancelled before the transfer started"),
            "False",
            "False",
            "False",
            "cancelled before the transfer started",
            id="Cancelled",
        ),
    ],
)
def test_phase_decides_the_kstatus_conditions(
    step: Step, ready: str, reconciling: str, stalled: str, message: str
) -> None:
    status = jobstatus.job_status(step, current={"phase": step.phase}, generation=3, now=NOW)
    assert status["phase"] == step.phase
    assert status["observedGeneration"] == 3
    assert summary(status) == {
        "Ready": (ready, step.phase, message),
        "Reconciling": (reconciling, step.phase, message),
        "Stalled": (stalled, step.phase, message),
    }
    assert status.get("reason") == step.reason


def test_every_phase_has_a_summary() -> None:
    assert set(jobstatus.SUMMARY) == set(get_args(Phase))


def test_fields_the_controller_set_earlier_are_carried_and_the_agents_are_left_out() -> None:
    status = jobstatus.job_status(
        Step(phase="Running", start_time=NOW), current=PREPARING, generation=1, now=NOW
    )
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "phase": "Running",
        "source": "h1",
        "target": "h2",
        "targetPlacement": {"cells": []},
        "startTime": "2026-12-01T12:00:00Z",
        "observedGeneration": 1,
    }


def test_a_step_sets_fields_anew_over_the_carried_ones() -> None:
    current = {"phase": "Pending", "source": "h0", "reason": "waiting"}
    status = jobstatus.job_status(
        Step(
            phase="Preparing",
            source="h1",
            target="h3",
            target_placement={"emulatorPins": [2]},
        ),
        current=current,
        generation=1,
        now=NOW,
    )
    assert (status["source"], status["target"], status["targetPlacement"]) == (
        "h1",
        "h3",
        {"emulatorPins": [2]},
    )
    assert "reason" not in status, "a new phase drops the old phase's reason"


def test_the_reason_stays_while_the_phase_does() -> None:
    current = {"phase": "Failed", "reason": "host h2 is not Ready", "completionTime": STARTED}
    status = jobstatus.job_status(Step(phase="Failed"), current=current, generation=1, now=NOW)
    assert status["reason"] == "host h2 is not Ready"
    assert status["completionTime"] == STARTED


def test_conditions_keep_their_transition_time_while_their_status_holds() -> None:
    first = jobstatus.job_status(Step(phase="Preparing"), current={}, generation=1, now=NOW)
    later = NOW + timedelta(seconds=30)
    again = jobstatus.job_status(Step(phase="Running"), current=first, generation=1, now=later)
    times = {c["type"]: c["lastTransitionTime"] for c in again["conditions"]}
    assert set(times.values()) == {"2026-12-01T12:00:00Z"}
    done = jobstatus.job_status(Step(phase="Succeeded"), current=again, generation=1, now=later)
    times = {c["type"]: c["lastTransitionTime"] for c in done["conditions"]}
    assert times == {
        "Ready": "2026-12-01T12:00:30Z",
        "Reconciling": "2026-12-01T12:00:30Z",
        "Stalled": "2026-12-01T12:00:00Z",
    }


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param("Succeeded", "Running", id="no-way-back-from-an-end"),
        pytest.param("Running", "Preparing", id="only-forward"),
    ],
)
def test_a_transition_the_job_lifecycle_forbids_raises(old: str, new: Any) -> None:
    with pytest.raises(IllegalTransition):
        jobstatus.job_status(Step(phase=new), current={"phase": old}, generation=1, now=NOW)


def test_a_job_decided_in_its_first_step_was_pending_all_along() -> None:
    status = jobstatus.job_status(
        Step(phase="Failed", reason="no such VM"), current={}, generation=1, now=NOW
    )
    assert status["phase"] == "Failed"


def test_last_migration_names_the_job_the_hosts_and_when() -> None:
    assert jobstatus.last_migration(job="j1", source="h1", target="h2", now=NOW) == {
        "job": "j1",
        "source": "h1",
        "target": "h2",
        "completionTime": "2026-12-01T12:00:00Z",
    }
