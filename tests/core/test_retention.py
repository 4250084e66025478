"""core.retention: when a schedule's snapshot falls due (clock edges included), its
name, which snapshots retention deletes, and one whole pass (`plan`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from kubevisor.api.wire import RESTORE_ANNOTATION, SCHEDULE_LABEL
from kubevisor.core import retention


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "now", "wanted"),
    [
        pytest.param("0 3 * * *", "2026-05-01T03:00", "2026-05-01T12:00", None, id="not-due-yet"),
        pytest.param(
            "0 3 * * *", "2026-05-01T03:00", "2026-05-02T03:00", "2026-05-02T03:00",
            id="due-exactly-now",
        ),
        pytest.param(
            "0 3 * * *", "2026-05-01T03:00", "2026-05-02T02:59:59.999999", None,
            id="a-microsecond-early",
        ),
        pytest.param(
            "0 3 * * *", "2026-05-01T03:00", "2026-05-09T17:00", "2026-05-09T03:00",
            id="days-missed-only-the-latest",
        ),
        pytest.param(
            "0 3 * * *", "2026-05-01T03:00", "2026-04-30T03:00", None,
            id="clock-went-back-behind-the-last",
        ),
        pytest.param(
            "*/15 * * * *", "2026-05-01T10:07:31", "2026-05-01T10:15:00", "2026-05-01T10:15",
            id="created-between-ticks",
        ),
        pytest.param(
            "0 0 29 2 *", "2026-03-01T00:00", "2028-02-29T00:00:01", "2028-02-29T00:00",
            id="leap-day",
        ),
        pytest.param(
            "@hourly", "2026-12-31T23:00", "2027-01-01T00:30", "2027-01-01T00:00",
            id="new-year",
        ),
    ],
)  # fmt: skip
def test_due(expression: str, after: str, now: str, wanted: str | None) -> None:
    got = retention.due(expression, after=at(after), now=at(now))
    assert got == (None if wanted is None else at(wanted))


def test_the_name_holds_the_schedule_and_the_due_time_in_utc() -> None:
    moment = datetime(2026, 5, 1, 5, 30, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    assert retention.snapshot_name("nightly", moment) == "nightly-20260501-0530"


def snap(name: str, created: str, phase: str | None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "creationTimestamp": f"{created}Z",
            "labels": {SCHEDULE_LABEL: "nightly"},
        },
        "status": {} if phase is None else {"phase": phase},
    }


OLD, MID, NEW = (f"2026-05-0{d}T03:00:00" for d in (1, 2, 3))


@pytest.mark.parametrize(
    ("snapshots", "keep", "used", "wanted"),
    [
        pytest.param(
            [snap("c", NEW, "Ready"), snap("a", OLD, "Ready"), snap("b", MID, "Ready")],
            2, set(), ["a"], id="oldest-ready-beyond-keep",
        ),
        pytest.param(
            [snap("a", OLD, "Ready"), snap("b", MID, "Ready"), snap("c", NEW, "Ready")],
            1, set(), ["a", "b"], id="oldest-first",
        ),
        pytest.param(
            [snap("a", OLD, "Ready"), snap("b", MID, "Ready"), snap("c", NEW, "InProgress")],
            1, set(), ["a"], id="in-progress-neither-counts-nor-goes",
        ),
        pytest.param(
            [snap("a", OLD, "Ready"), snap("b", MID, "Ready"), snap("c", NEW, "Ready")],
            1, {"a"}, ["b"], id="in-use-stays",
        ),
        pytest.param(
            [snap("a", OLD, "Failed"), snap("b", MID, "Ready"), snap("c", NEW, "Failed")],
            5, set(), ["a"], id="failed-older-than-a-ready-goes",
        ),
        pytest.param(
            [snap("a", OLD, "Failed"), snap("b", MID, None)],
            1, set(), [], id="nothing-ready-nothing-goes",
        ),
        pytest.param(
            [snap("b", OLD, "Ready"), snap("a", OLD, "Ready")],
            1, set(), ["a"], id="same-second-name-breaks-the-tie",
        ),
    ],
)  # fmt: skip
def test_expired(
    snapshots: list[dict[str, Any]], keep: int, used: set[str], wanted: list[str]
) -> None:
    assert retention.expired(snapshots, keep=keep, used=used) == wanted


def test_a_restore_annotation_puts_its_snapshot_in_use() -> None:
    vms = [
        {"metadata": {"name": "a", "annotations": {RESTORE_ANNOTATION: "nightly-1@r2"}}},
        {"metadata": {"name": "b", "annotations": {RESTORE_ANNOTATION: "weekly-1"}}},
        {"metadata": {"name": "c"}},
    ]
    assert retention.in_use(vms) == {"nightly-1", "weekly-1"}


def schedule(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "nightly",
            "namespace": "apps",
            "generation": 1,
            "creationTimestamp": "2026-05-01T10:00:00Z",
        },
        "spec": {"vm": "db", "schedule": "0 3 * * *", "keep": 2} | spec,
    }


VMS = [{"metadata": {"name": "db", "namespace": "apps"}}]


def test_a_due_pass_creates_the_snapshot_and_trims_to_keep() -> None:
    old = [snap(n, c, "Ready") for n, c in (("a", OLD), ("b", MID), ("c", NEW))]
    plan = retention.plan(schedule(), snapshots=old, vms=VMS, now=at("2026-05-04T03:00:05"))
    assert plan.create == {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachineSnapshot",
        "metadata": {
            "name": "nightly-20260504-0300",
            "namespace": "apps",
            "labels": {SCHEDULE_LABEL: "nightly"},
        },
        "spec": {"vm": "db"},
    }
    assert plan.delete == ["a"]
    status = plan.status
    assert (status["lastSnapshot"], status["lastSnapshotTime"], status["nextSnapshotTime"]) == (
        "nightly-20260504-0300",
        "2026-05-04T03:00:00Z",
        "2026-05-05T03:00:00Z",
    )
    assert status["kept"] == 3
    assert status["conditions"][0]["status"] == "True"


def test_the_same_pass_twice_names_the_same_snapshot() -> None:
    now = at("2026-05-04T03:00:05")
    first = retention.plan(schedule(), snapshots=[], vms=VMS, now=now)
    again = retention.plan(schedule(), snapshots=[], vms=VMS, now=now + timedelta(seconds=40))
    assert first.create is not None and first.create == again.create


def test_after_its_snapshot_a_schedule_waits_for_the_next_time() -> None:
    done = schedule() | {"status": {"lastSnapshotTime": "2026-05-04T03:00:00Z"}}
    plan = retention.plan(done, snapshots=[], vms=VMS, now=at("2026-05-04T09:00:00"))
    assert plan.create is None
    assert plan.status["nextSnapshotTime"] == "2026-05-05T03:00:00Z"


@pytest.mark.parametrize(
    ("obj", "vms", "reason"),
    [
        pytest.param(schedule(schedule="61 * * * *"), VMS, "InvalidSchedule", id="bad-minute"),
        pytest.param(schedule(suspend=True), VMS, "Suspended", id="suspended"),
        pytest.param(schedule(), [], "VMNotFound", id="no-vm"),
        pytest.param(
            schedule() | {"metadata": schedule()["metadata"] | {"name": "n" * 64}},
            VMS,
            "NameTooLong",
            id="name-too-long-for-a-label",
        ),
    ],
)
def test_a_refused_pass_takes_and_deletes_nothing(
    obj: dict[str, Any], vms: list[dict[str, Any]], reason: str
) -> None:
    old = [snap(n, c, "Ready") for n, c in (("a", OLD), ("b", MID), ("c", NEW))]
    plan = retention.plan(obj, snapshots=old, vms=vms, now=at("2026-05-09T03:00:00"))
    assert (plan.create, plan.delete) == (None, [])
    condition = plan.status["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("False", reason)
    assert "nextSnapshotTime" not in plan.status
