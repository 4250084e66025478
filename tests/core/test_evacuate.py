"""`core.evacuate`: when a request to evacuate a host is carried out, waits, or is refused."""

from __future__ import annotations

import pytest

from kubevisor.core import evacuate


@pytest.mark.parametrize(
    ("ready", "confirmed", "silent_for", "deadline", "outcome", "words"),
    [
        pytest.param(True, True, None, 60.0, "Refused", "is Ready", id="ready-host-refused"),
        pytest.param(False, True, 5.0, None, "Evacuated", "by hand", id="confirmed-at-once"),
        pytest.param(
            False, False, 500.0, None, "Refused", "--confirm-fenced", id="no-self-fence-refused"
        ),
        pytest.param(False, False, 50.0, 60.0, "Waiting", "20s more", id="before-the-deadline"),
        pytest.param(False, False, None, 60.0, "Waiting", "70s more", id="never-renewed"),
        pytest.param(
            False, False, 70.0, 60.0, "Evacuated", "fences itself 60s", id="after-self-fence"
        ),
    ],
)
def test_decide(
    ready: bool,
    confirmed: bool,
    silent_for: float | None,
    deadline: float | None,
    outcome: str,
    words: str,
) -> None:
    verdict = evacuate.decide(
        host="h1",
        ready=ready,
        confirmed=confirmed,
        silent_for=silent_for,
        deadline=deadline,
        margin=10.0,
    )
    assert verdict.outcome == outcome
    assert words in f"{verdict.message} {verdict.stopped}"
    assert (verdict.stopped is not None) is (outcome == "Evacuated")


T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


@pytest.mark.parametrize(
    ("request_", "settled", "pending"),
    [
        pytest.param(None, None, False, id="no-request"),
        pytest.param({"requestedAt": T1}, None, True, id="new-request"),
        pytest.param(
            {"requestedAt": T1}, {"requestedAt": T1, "outcome": "Refused"}, False, id="refused-once"
        ),
        pytest.param(
            {"requestedAt": T1}, {"requestedAt": T1, "outcome": "Evacuated"}, False, id="done"
        ),
        pytest.param(
            {"requestedAt": T1}, {"requestedAt": T1, "outcome": "Waiting"}, True, id="still-waiting"
        ),
        pytest.param(
            {"requestedAt": T2}, {"requestedAt": T1, "outcome": "Refused"}, True, id="asked-again"
        ),
    ],
)
def test_pending(
    request_: dict[str, object] | None, settled: dict[str, object] | None, pending: bool
) -> None:
    assert evacuate.pending(request_, settled) is pending
