"""core/hosts.py: judging hosts from their heartbeats, present or missing, and the
controller's HypervisorHost status (conditions from the judgement, the admin's spec and
the host's CPU sets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubevisor.api.hypervisorhost import Resources
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
            Judgement(False, "HostNotFound", "HypervisorHost h9 does not exist", 500.0, 40.0),
            id="lost-since-its-heartbeat-expired-long-before",
        ),
        pytest.param(
            beat(40 + 5),
            Judgement(False, "HostNotFound", "HypervisorHost h9 does not exist", 5.0, 40.0),
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


READY = hosts.Judgement(True, "AgentHeartbeating", "the host's agent renews its Lease", 0.0)
DOWN = hosts.Judgement(False, "HeartbeatExpired", "no heartbeat for 60s", 20.0)
BAD_SET = "spec.cpuSharedSet names CPUs 8-63 the host does not have (it has 0-7)"


def schedulable(
    *,
    judgement: hosts.Judgement = READY,
    cordoned: bool = False,
    maintenance: bool = False,
    cpu_set_errors: tuple[str, ...] = (),
) -> tuple[str, str, str]:
    status = hosts.controller_host_status(
        judgement=judgement,
        unschedulable=cordoned,
        maintenance=maintenance,
        allocatable=Resources(cpu=8),
        allocated=Resources(cpu=0),
        vm_count=0,
        generation=3,
        previous=[],
        now=NOW,
        cpu_set_errors=cpu_set_errors,
    )
    conditions = status["conditions"]
    assert isinstance(conditions, list)
    found = next(c for c in conditions if c["type"] == "Schedulable")
    return found["status"], found["reason"], found["message"]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, ("True", "Schedulable", "new VMs may be placed here"), id="open"),
        pytest.param(
            {"cpu_set_errors": (BAD_SET,)},
            ("False", "InvalidCpuSets", BAD_SET),
            id="cpu-sets-name-cpus-the-host-lacks",
        ),
        pytest.param(
            {"cpu_set_errors": (BAD_SET, "CPUs 4 are in both sets")},
            ("False", "InvalidCpuSets", f"{BAD_SET}; CPUs 4 are in both sets"),
            id="every-error-in-the-message",
        ),
        pytest.param(
            {"cpu_set_errors": (BAD_SET,), "cordoned": True},
            ("False", "InvalidCpuSets", BAD_SET),
            id="a-cordon-does-not-hide-the-bad-sets",
        ),
        pytest.param(
            {"cpu_set_errors": (BAD_SET,), "judgement": DOWN},
            ("False", "NotReady", "no heartbeat for 60s"),
            id="not-ready-first",
        ),
        pytest.param(
            {"cordoned": True}, ("False", "Cordoned", "spec.unschedulable is true"), id="cordoned"
        ),
    ],
)
def test_schedulable_condition(kwargs: dict[str, object], expected: tuple[str, str, str]) -> None:
    assert schedulable(**kwargs) == expected  # type: ignore[arg-type]
