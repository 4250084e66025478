"""The watchdog's judgement (`core.watchdog`): it acts only on an agent that stopped
beating, fences once the agent's own deadline passed, and kills a stalled agent."""

from __future__ import annotations

import pytest

from kubevisor.core import watchdog
from kubevisor.core.watchdog import Heartbeat

BEAT = Heartbeat(pid=42, started=7, boot="b", renewed=100.0, deadline=60.0, beat=150.0)


@pytest.mark.parametrize(
    ("now", "fence", "kill"),
    [
        pytest.param(151.0, False, False, id="a-beating-agent-fences-by-itself"),
        pytest.param(165.0, True, False, id="silent-15s-deadline-passed-fences"),
        pytest.param(159.0, False, False, id="silent-9s-deadline-not-yet-waits"),
        pytest.param(152.9, False, False, id="silent-just-under-stale-waits"),
        pytest.param(180.0, True, True, id="silent-30s-stalled-is-killed"),
    ],
)
def test_judge(now: float, fence: bool, kill: bool) -> None:
    verdict = watchdog.judge(BEAT, now=now, stall_after=30)
    assert (verdict.fence, verdict.kill) == (fence, kill)
    assert verdict.silent_for == now - 150.0
    assert verdict.unrenewed_for == now - 100.0


def test_a_beating_agent_past_its_deadline_is_left_to_fence_itself() -> None:
    fenced = Heartbeat(pid=42, started=7, boot="b", renewed=0.0, deadline=60.0, beat=500.0)
    assert not watchdog.judge(fenced, now=501.0, stall_after=30).fence


def test_heartbeat_round_trip_and_refusals() -> None:
    assert watchdog.parse(BEAT.dumps()) == BEAT
    for text in ("", "[]", '{"pid": 1}', '{"pid": "x", "started": 1, "boot": "b", '
                 '"renewed": 1, "deadline": 1, "beat": 1}'):  # fmt: skip
        with pytest.raises(ValueError, match="not a heartbeat"):
            watchdog.parse(text)


def test_stall_after_must_exceed_the_staleness() -> None:
    assert watchdog.check_stall_after(30) is None
    assert watchdog.check_stall_after(2) == (
        "--stall-after 2s is shorter than 3s, the silence after which the watchdog takes "
        "the agent for stopped: the agent beats once a second"
    )
