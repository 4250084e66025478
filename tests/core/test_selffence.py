"""`core.selffence`: when an agent fences itself, when its fence holds, when failover may start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubevisor.core import selffence
from kubevisor.core.selffence import Fenced


@pytest.mark.parametrize(
    ("renewed", "now", "deadline", "expected"),
    [
        pytest.param(100.0, 159.9, 60.0, False, id="just-before-the-deadline"),
        pytest.param(100.0, 160.0, 60.0, True, id="at-the-deadline"),
        pytest.param(100.0, 400.0, 60.0, True, id="long-past-it"),
        pytest.param(100.0, 100.0, 60.0, False, id="just-renewed"),
    ],
)
def test_due(renewed: float, now: float, deadline: float, expected: bool) -> None:
    assert selffence.due(renewed=renewed, now=now, deadline=deadline) is expected


def test_notice_names_the_host_and_the_silence() -> None:
    assert selffence.notice(host="h1", silent_for=25.4) == (
        "self-fenced on host h1: its Lease was not renewed for 25s"
    )


@pytest.mark.parametrize(
    ("deadline", "lease", "ok"),
    [
        pytest.param(60, 40, True, id="default-60s-with-a-40s-lease"),
        pytest.param(20, 40, True, id="two-renewals"),
        pytest.param(19, 40, False, id="less-than-two-renewals"),
        pytest.param(5, 10, True, id="short-lease"),
    ],
)
def test_check_deadline(deadline: int, lease: int, ok: bool) -> None:
    problem = selffence.check_deadline(deadline=deadline, lease_duration=lease)
    assert (problem is None) is ok
    if not ok:
        assert problem is not None and "at least 20s" in problem


@pytest.mark.parametrize(
    ("grace", "timeout", "deadline", "after", "delayed"),
    [
        pytest.param(120.0, 40.0, 60.0, 120.0, False, id="defaults-grace-covers-the-deadline"),
        pytest.param(120.0, 40.0, None, 120.0, False, id="no-self-fencing-grace-alone"),
        pytest.param(0.0, 40.0, 60.0, 30.0, True, id="grace-0-waits-for-deadline-and-margin"),
        pytest.param(20.0, 10.0, 25.0, 25.0, True, id="short-lease-grace-too-short"),
        pytest.param(25.0, 10.0, 25.0, 25.0, False, id="exactly-enough"),
    ],
)
def test_failover_delay(
    grace: float, timeout: float, deadline: float | None, after: float, delayed: bool
) -> None:
    delay = selffence.failover_delay(grace=grace, timeout=timeout, deadline=deadline, margin=10.0)
    assert delay.after == after
    assert (delay.message is not None) is delayed
    if delayed:
        assert delay.message is not None and f"waits {after:.0f}s" in delay.message


@pytest.mark.parametrize(
    ("fenced", "holds"),
    [
        pytest.param(Fenced("u1", "u1", "h1", True), True, id="still-bound-here-fails-over"),
        pytest.param(Fenced("u1", "u1", None, True), False, id="unbound-by-failover"),
        pytest.param(Fenced("u1", "u1", "h2", True), False, id="running-elsewhere"),
        pytest.param(Fenced("u1", None, None, False), False, id="deleted"),
        pytest.param(Fenced("u1", "u2", "h1", True), False, id="replaced-by-another-object"),
        pytest.param(Fenced("u1", "u1", "h1", False), False, id="manual-vm-never-failed-over"),
    ],
)
def test_holds(fenced: Fenced, holds: bool) -> None:
    assert selffence.holds(fenced, host="h1") is holds


NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ready", "silent_for", "deadline", "confirmed", "status", "reason", "at"),
    [
        pytest.param(True, None, 60.0, None, "False", "HostReady", None, id="ready"),
        pytest.param(False, 30.0, 60.0, None, "False", "AwaitingSelfFence", None, id="before"),
        pytest.param(
            False, 100.0, 60.0, None, "True", "SelfFenced", NOW - timedelta(seconds=40), id="after"
        ),
        pytest.param(False, 100.0, None, None, "False", "NoFencing", None, id="no-self-fencing"),
        pytest.param(False, 5.0, None, NOW, "True", "ConfirmedByHand", NOW, id="confirmed"),
    ],
)
def test_fenced(
    ready: bool,
    silent_for: float | None,
    deadline: float | None,
    confirmed: datetime | None,
    status: str,
    reason: str,
    at: datetime | None,
) -> None:
    row, fenced_at = selffence.fenced(
        ready=ready, silent_for=silent_for, deadline=deadline, confirmed=confirmed, now=NOW
    )
    assert (row.type, row.status, row.reason, fenced_at) == ("Fenced", status, reason, at)
