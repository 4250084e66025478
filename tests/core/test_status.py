"""The agent's status for a bound VM: phase table, kstatus conditions, stable timestamps."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubevisor.api.conditions import Condition
from kubevisor.api.virtualmachine import VirtualMachineSpec
from kubevisor.core import status
from kubevisor.core.convergence import DomainObservation, DomainState
from kubevisor.core.status import AgentError, Inputs

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def inputs(
    *,
    domain: tuple[str, str] | None = None,
    hardware: str = "hw1",
    deleting: bool = False,
    error: AgentError | None = None,
    **spec: Any,
) -> Inputs:
    observed = None
    if domain is not None:
        observed = DomainObservation(
            uuid="u", state=DomainState(domain[0]), reason=domain[1], hardware="hw1"
        )
    return Inputs(
        spec=VirtualMachineSpec.model_validate({"memory": {"size": "64Mi"}, **spec}),
        generation=2,
        deleting=deleting,
        domain=observed,
        hardware=hardware,
        error=error,
    )


def conditions(result: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in result["conditions"]}


CASES = [
    pytest.param(inputs(), "Starting", False, "True", "False", id="no-domain-yet"),
    pytest.param(
        inputs(runStrategy="Halted"),
        "Stopped",
        True,
        "False",
        "False",
        id="halted-and-stopped-is-ready",
    ),
    pytest.param(
        inputs(domain=("running", "booted")), "Running", True, "False", "False", id="running"
    ),
    pytest.param(
        inputs(domain=("paused", "user"), paused=True),
        "Paused",
        True,
        "False",
        "False",
        id="paused-as-declared",
    ),
    pytest.param(
        inputs(domain=("paused", "user")), "Paused", False, "True", "False", id="resuming"
    ),
    pytest.param(
        inputs(domain=("running", "booted"), runStrategy="Halted"),
        "Stopping",
        False,
        "True",
        "False",
        id="stopping",
    ),
    pytest.param(
        inputs(domain=("shutoff", "crashed"), runStrategy="Once"),
        "Failed",
        False,
        "False",
        "True",
        id="once-crashed-is-stalled",
    ),
    pytest.param(
        inputs(domain=("shutoff", "shutdown"), runStrategy="Once"),
        "Stopped",
        True,
        "False",
        "False",
        id="once-completed",
    ),
    pytest.param(
        inputs(domain=("shutoff", "shutdown")),
        "Starting",
        False,
        "True",
        "False",
        id="always-restarting",
    ),
    pytest.param(
        inputs(domain=("running", "booted"), deleting=True),
        "Terminating",
        False,
        "True",
        "False",
        id="terminating",
    ),
    pytest.param(
        inputs(error=AgentError(permanent=True, reason="InvalidDomain", message="x")),
        "Failed",
        False,
        "False",
        "True",
        id="permanent-error-stalls",
    ),
    pytest.param(
        inputs(error=AgentError(permanent=False, reason="LibvirtDown", message="x")),
        "Starting",
        False,
        "True",
        "False",
        id="retryable-error-keeps-reconciling",
    ),
]


@pytest.mark.parametrize(("given", "phase", "ready", "reconciling", "stalled"), CASES)
def test_phase_and_kstatus_conditions(
    given: Inputs, phase: str, ready: bool, reconciling: str, stalled: str
) -> None:
    result = status.bound_vm_status(
        given, previous_phase=None, previous=[], restart_count=0, now=NOW
    )
    assert result["phase"] == phase
    got = conditions(result)
    assert got["Ready"] == ("True" if ready else "False")
    assert got["Reconciling"] == reconciling
    assert got["Stalled"] == stalled
    assert not (got["Reconciling"] == "True" and got["Stalled"] == "True")
    assert result["observedGeneration"] == 2
    assert result["created"] is (given.domain is not None)


def test_restart_required_when_hardware_changed_under_a_running_domain() -> None:
    changed = inputs(domain=("running", "booted"), hardware="hw2")
    result = status.bound_vm_status(
        changed, previous_phase="Running", previous=[], restart_count=0, now=NOW
    )
    assert conditions(result)["RestartRequired"] == "True"
    same = inputs(domain=("running", "booted"))
    result = status.bound_vm_status(
        same, previous_phase="Running", previous=[], restart_count=0, now=NOW
    )
    assert conditions(result)["RestartRequired"] == "False"


def test_transition_time_moves_only_when_status_flips() -> None:
    earlier = NOW - timedelta(minutes=5)
    previous = [
        Condition(type="Ready", status="True", reason="Running", last_transition_time=earlier),
        Condition(type="Paused", status="False", reason="NotPaused", last_transition_time=earlier),
    ]
    running = inputs(domain=("running", "booted"))
    result = status.bound_vm_status(
        running, previous_phase="Running", previous=previous, restart_count=0, now=NOW
    )
    times = {c["type"]: c["lastTransitionTime"] for c in result["conditions"]}
    assert times["Ready"] == times["Paused"] == earlier.isoformat().replace("+00:00", "Z")
    paused = inputs(domain=("paused", "user"), paused=True)
    result = status.bound_vm_status(
        paused, previous_phase="Running", previous=previous, restart_count=0, now=NOW
    )
    times = {c["type"]: c["lastTransitionTime"] for c in result["conditions"]}
    assert times["Paused"] == NOW.isoformat().replace("+00:00", "Z")
    assert times["Ready"] == earlier.isoformat().replace("+00:00", "Z")


def test_same_inputs_give_the_same_status() -> None:
    given = inputs(domain=("running", "booted"))
    first = status.bound_vm_status(
        given, previous_phase=None, previous=[], restart_count=1, now=NOW
    )
    again = status.bound_vm_status(
        given,
        previous_phase="Running",
        previous=[Condition.model_validate(c) for c in first["conditions"]],  # type: ignore[attr-defined]
        restart_count=1,
        now=NOW + timedelta(seconds=30),
    )
    assert again == first


@pytest.mark.parametrize(
    ("unenforced", "condition_status", "reason", "message"),
    [
        pytest.param((), "True", "Enforced", "the host enforces every limit of the spec", id="all"),
        pytest.param(
            ("cpu.tune: no cpu controller",),
            "False",
            "NotEnforced",
            "cpu.tune: no cpu controller",
            id="one-unenforced",
        ),
        pytest.param(
            ("cpu.tune: no cpu controller", "numa: no cpuset controller"),
            "False",
            "NotEnforced",
            "cpu.tune: no cpu controller; numa: no cpuset controller",
            id="messages-joined",
        ),
    ],
)
def test_limits_the_host_cannot_enforce_are_reported_without_failing_the_vm(
    unenforced: tuple[str, ...], condition_status: str, reason: str, message: str
) -> None:
    given = dataclasses.replace(inputs(domain=("running", "booted")), unenforced=unenforced)
    result = status.bound_vm_status(
        given, previous_phase="Running", previous=[], restart_count=0, now=NOW
    )
    (limits,) = [c for c in result["conditions"] if c["type"] == status.LIMITS_ENFORCED]  # type: ignore[attr-defined]
    assert (limits["status"], limits["reason"], limits["message"]) == (
        condition_status,
        reason,
        message,
    )
    assert result["phase"] == "Running"
    assert conditions(result)["Ready"] == "True"
