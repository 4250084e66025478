"""Judging hosts from their heartbeats, present or missing (core/hosts.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubevisor.core import hosts
from kubevisor.core.hosts import Heartbeat, Judgement

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def beat(seconds_ago: float, duration: float = 40) -> Heartbeat:
    return Heartbeat(renewed=NOW - timedelta(seconds=seconds_ago), duration=duration)


@pytest.mark.parametrize(
    ("heartbeat", "timeout", "ready", "reason", "down_for"),
    [
        pytest.param(beat(10), None, True, "AgentHeartbeating", 0.0, id="fresh"),
        pytest.param(beat(50), None, False, "HeartbeatExpired", 10.0, id="expired"),
        pytest.param(beat(50), 60.0, True, "AgentHeartbeating", 0.0, id="timeout-overrides"),
        pytest.param(None, None, False, "NoHeartbeat", 0.0, id="never"),
    ],
)
def test_judge(
    heartbeat: Heartbeat | None, timeout: float | None, ready: bool, reason: str, down_for: float
) -> None:
    judgement = hosts.judge(heartbeat, now=NOW, timeout=timeout)
    assert (judgement.ready, judgement.reason, judgement.down_for) == (ready, reason, down_for)


MISSED_A_MINUTE_AGO = NOW - timedelta(seconds=60)


@pytest.mark.parametrize(
    ("heartbeat", "judgement"),
    [
        pytest.param(
            beat(10),
            Judgement(True, "AgentHeartbeating", "the host's agent renews its Lease", 0.0),
            id="its-agent-lives-so-the-host-does",
        ),
        pytest.param(
            None,
            Judgement(False, "HostNotFound", "HypervisorHost h9 does not exist", 60.0),
            id="never-heartbeat-lost-since-missed",
        ),
        pytest.param(
            beat(40 + 500),
            Judgement(False, "HostNotFound", "HypervisorHost h9 does not exist", 500.0),
            id="lost-since-its-heartbeat-expired-long-before",
        ),
        pytest.param(
            beat(40 + 5),
            Judgement(False, "HostNotFound", "HypervisorHost h9 does not exist", 5.0),
            id="lost-since-its-heartbeat-expired-after-it-was-missed",
        ),
    ],
)
def test_judge_missing(heartbeat: Heartbeat | None, judgement: Judgement) -> None:
    assert (
        hosts.judge_missing(
            heartbeat, name="h9", missing_since=MISSED_A_MINUTE_AGO, now=NOW, timeout=None
        )
        == judgement
    )
