"""Power fencing's decisions (`core.powerfence`): when to fence a lost host again, what
its FencingFailed and Fenced conditions say, and how an evacuation and the Fenced
condition treat a host with spec.fencing (`core.evacuate`, `core.selffence`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubevisor.core import evacuate, powerfence, selffence

AT = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
BMC = "Redfish BMC https://10.0.0.5 (system 1)"
OFF = powerfence.succeeded(bmc=BMC, at=AT, took=1.25)
FAILED = powerfence.failed(None, reason="BMCUnreachable", error=f"{BMC} cannot be reached", at=AT)


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [
        pytest.param(1, 15, id="first-retry-after-15s"),
        pytest.param(2, 30, id="doubles"),
        pytest.param(4, 120, id="fourth-after-2min"),
        pytest.param(6, 300, id="capped-at-5min"),
        pytest.param(60, 300, id="stays-capped"),
    ],
)
def test_retry_after(failures: int, seconds: float) -> None:
    assert powerfence.retry_after(failures) == seconds


@pytest.mark.parametrize(
    ("outcome", "later", "due"),
    [
        pytest.param(None, 0, True, id="not-fenced-yet"),
        pytest.param(OFF, 3600, False, id="confirmed-off-never-again"),
        pytest.param(FAILED, 14, False, id="failed-too-recently"),
        pytest.param(FAILED, 15, True, id="failed-retry-due"),
    ],
)
def test_due(outcome: powerfence.Outcome | None, later: float, due: bool) -> None:
    assert powerfence.due(outcome, now=AT + timedelta(seconds=later)) is due


def test_failures_count_in_a_row_and_restart_after_a_success() -> None:
    second = powerfence.failed(FAILED, reason="Timeout", error="slow", at=AT)
    assert (second.failures, second.reason) == (2, "Timeout")
    assert powerfence.failed(OFF, reason="Timeout", error="slow", at=AT).failures == 1
    assert second.message == "powering the host off failed: slow"


def test_success_names_the_bmc_the_time_and_how_long_it_took() -> None:
    assert OFF.off and OFF.reason == "PoweredOff"
    assert OFF.message == (
        f"{BMC} confirmed power Off at 2026-01-01T12:00:00Z, 1.2s after the power-off request"
    )
    assert powerfence.stopped(OFF) == f"powered off: {OFF.message}"


@pytest.mark.parametrize(
    ("ready", "outcome", "row"),
    [
        pytest.param(True, FAILED, ("False", "HostReady"), id="ready"),
        pytest.param(False, None, ("False", "NotAttempted"), id="lost-not-fenced-yet"),
        pytest.param(False, OFF, ("False", "PoweredOff"), id="powered-off"),
        pytest.param(False, FAILED, ("True", "BMCUnreachable"), id="failed"),
    ],
)
def test_fencing_failed_condition(
    ready: bool, outcome: powerfence.Outcome | None, row: tuple[str, str]
) -> None:
    condition = powerfence.fencing_failed("h1", ready=ready, outcome=outcome)
    assert (condition.type, condition.status, condition.reason) == ("FencingFailed", *row)


def test_fencing_failed_message_names_the_error_the_next_try_and_the_way_out() -> None:
    message = powerfence.fencing_failed("h1", ready=False, outcome=FAILED).message
    assert message == (
        f"powering the host off failed: {BMC} cannot be reached (attempt 1; next at "
        "2026-01-01T12:00:15Z). The VMs of host h1 are not started elsewhere until a fence "
        "succeeds or an operator confirms the host is off: kubevisor evacuate h1 "
        "--confirm-fenced"
    )


@pytest.mark.parametrize(
    ("outcome", "status", "reason", "at"),
    [
        pytest.param(None, "False", "AwaitingPowerOff", None, id="in-progress"),
        pytest.param(FAILED, "False", "AwaitingPowerOff", None, id="failed"),
        pytest.param(OFF, "True", "PoweredOff", AT, id="powered-off"),
    ],
)
def test_fenced_with_power_fencing_ignores_the_agents_deadline(
    outcome: powerfence.Outcome | None, status: str, reason: str, at: datetime | None
) -> None:
    row, fenced_at = selffence.fenced(
        ready=False,
        silent_for=3600,
        deadline=60,
        confirmed=None,
        now=AT,
        power_fencing=True,
        powered=outcome,
    )
    assert (row.status, row.reason, fenced_at) == (status, reason, at)


def test_confirmed_by_hand_wins_over_a_failed_power_fence() -> None:
    row, _ = selffence.fenced(
        ready=False,
        silent_for=50,
        deadline=60,
        confirmed=AT,
        now=AT,
        power_fencing=True,
        powered=FAILED,
    )
    assert row.reason == "ConfirmedByHand"


@pytest.mark.parametrize(
    ("confirmed", "outcome", "verdict", "stopped"),
    [
        pytest.param(False, None, "Waiting", None, id="waits-for-the-power-off"),
        pytest.param(False, FAILED, "Waiting", None, id="waits-after-a-failure"),
        pytest.param(False, OFF, "Evacuated", powerfence.stopped(OFF), id="powered-off"),
        pytest.param(True, FAILED, "Evacuated", evacuate.CONFIRMED, id="confirmed-by-hand"),
    ],
)
def test_evacuate_a_power_fenced_host(
    confirmed: bool, outcome: powerfence.Outcome | None, verdict: str, stopped: str | None
) -> None:
    decided = evacuate.decide(
        host="h1",
        ready=False,
        confirmed=confirmed,
        silent_for=3600,
        deadline=60,
        margin=10,
        power_fencing=True,
        powered=outcome,
    )
    assert (decided.outcome, decided.stopped) == (verdict, stopped)
    if outcome is FAILED and not confirmed:
        assert FAILED.message in decided.message
        assert "kubevisor evacuate --confirm-fenced" in decided.message
