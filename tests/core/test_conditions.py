"""Condition rows, stable transition times and the write-only-on-change comparison."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubevisor.api.conditions import Condition
from kubevisor.core import conditions
from kubevisor.core.conditions import Row

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=5)
STAMP = "2026-12-01T11:55:00Z"


def test_previous_reads_the_conditions_of_a_wire_status_and_nothing_from_none() -> None:
    status = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": STAMP}]}
    assert conditions.previous(status) == [
        Condition(type="Ready", status="True", last_transition_time=EARLIER)
    ]
    assert conditions.previous(None) == []
    assert conditions.previous({"phase": "Running"}) == []


@pytest.mark.parametrize(
    ("before", "now_status", "since"),
    [
        pytest.param("True", "True", EARLIER, id="unchanged-keeps-its-time"),
        pytest.param("True", "False", NOW, id="flipped-moves-to-now"),
        pytest.param("Unknown", "False", NOW, id="unknown-to-false-moves"),
        pytest.param(None, "True", NOW, id="new-condition-starts-now"),
    ],
)
def test_transition_time_moves_only_when_the_status_changes(
    before: Any, now_status: Any, since: datetime
) -> None:
    previous = (
        []
        if before is None
        else [Condition(type="Ready", status=before, last_transition_time=EARLIER)]
    )
    made = conditions.make_condition(
        previous,
        type_="Ready",
        status=now_status,
        reason="R",
        message="m",
        generation=4,
        now=NOW,
    )
    assert made.last_transition_time == since
    assert (made.status, made.reason, made.message, made.observed_generation) == (
        now_status,
        "R",
        "m",
        4,
    )


def test_wire_keeps_the_order_of_the_rows_and_each_rows_own_time() -> None:
    previous = [Condition(type="B", status="False", last_transition_time=EARLIER)]
    rows = [Row("A", "True", "Yes", "a holds"), Row("B", conditions.truth(False), "No", "b not")]
    assert conditions.wire(previous, rows, generation=2, now=NOW) == [
        {
            "type": "A",
            "status": "True",
            "reason": "Yes",
            "message": "a holds",
            "lastTransitionTime": "2026-12-01T12:00:00Z",
            "observedGeneration": 2,
        },
        {
            "type": "B",
            "status": "False",
            "reason": "No",
            "message": "b not",
            "lastTransitionTime": STAMP,
            "observedGeneration": 2,
        },
    ]


READY = {"type": "Ready", "status": "True", "reason": "R", "lastTransitionTime": STAMP}


@pytest.mark.parametrize(
    ("current", "wanted", "changed"),
    [
        pytest.param({"phase": "Running"}, {"phase": "Running"}, False, id="same-field"),
        pytest.param({"phase": "Running"}, {"phase": "Stopped"}, True, id="field-changed"),
        pytest.param({}, {"phase": "Running"}, True, id="field-new"),
        pytest.param({"phase": "Running", "host": "h1"}, {}, False, id="fields-not-wanted"),
        pytest.param(
            {"conditions": [READY]},
            {"conditions": [{**READY, "lastTransitionTime": "2026-12-01T11:55:00+00:00"}]},
            False,
            id="same-condition-written-differently",
        ),
        pytest.param(
            {"conditions": [READY, {"type": "Stalled", "status": "False"}]},
            {"conditions": [READY]},
            False,
            id="other-conditions-are-another-writers",
        ),
        pytest.param(
            {"conditions": [READY]},
            {"conditions": [{**READY, "message": "new"}]},
            True,
            id="condition-message-changed",
        ),
        pytest.param(
            {"conditions": [READY]},
            {"conditions": [READY, {"type": "Paused", "status": "False"}]},
            True,
            id="condition-new",
        ),
    ],
)
def test_differs_only_when_an_apply_would_change_something(
    current: dict[str, Any], wanted: dict[str, Any], changed: bool
) -> None:
    assert conditions.differs(current, wanted) is changed
