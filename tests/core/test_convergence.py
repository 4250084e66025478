"""What the agent does to a domain, for each VM and domain state."""

from __future__ import annotations

import pytest

from kubevisor.core import convergence
from kubevisor.core.convergence import Action, DomainObservation, DomainState
from kubevisor.core.lifecycle import RunStrategy


def dom(state: str, reason: str = "booted") -> DomainObservation:
    return DomainObservation(uuid="u", state=DomainState(state), reason=reason)


A = Action
CASES = [
    pytest.param("Always", False, False, None, (A.DEFINE_AND_START,), False, id="new-vm-starts"),
    pytest.param("Halted", False, False, None, (), False, id="new-halted-vm-stays-off"),
    pytest.param("Always", False, False, dom("running"), (), False, id="running-stays"),
    pytest.param("Halted", False, False, dom("running"), (A.SHUTDOWN,), False, id="halt-stops"),
    pytest.param(
        "Always",
        False,
        False,
        dom("shutoff", "shutdown"),
        (A.DEFINE_AND_START,),
        True,
        id="always-restarts-after-guest-poweroff",
    ),
    pytest.param(
        "RerunOnFailure",
        False,
        False,
        dom("shutoff", "shutdown"),
        (),
        False,
        id="rerun-on-failure-keeps-clean-stop",
    ),
    pytest.param(
        "RerunOnFailure",
        False,
        False,
        dom("shutoff", "crashed"),
        (A.DEFINE_AND_START,),
        True,
        id="rerun-on-failure-restarts-crash",
    ),
    pytest.param(
        "Once", False, False, dom("shutoff", "crashed"), (), False, id="once-never-restarts"
    ),
    pytest.param(
        "Once",
        False,
        False,
        dom("shutoff", "unknown"),
        (A.DEFINE_AND_START,),
        False,
        id="defined-never-started-starts",
    ),
    pytest.param(
        "Always",
        False,
        False,
        dom("crashed", "panicked"),
        (A.DESTROY,),
        False,
        id="crashed-domain-is-cleared",
    ),
    pytest.param("Always", True, False, dom("running"), (A.SUSPEND,), False, id="pause"),
    pytest.param("Always", False, False, dom("paused", "user"), (A.RESUME,), False, id="unpause"),
    pytest.param("Always", True, False, dom("paused", "user"), (), False, id="stays-paused"),
    pytest.param(
        "Always", False, False, dom("shutdown", "user"), (), False, id="shutdown-in-progress-waits"
    ),
    pytest.param(
        "Always", False, True, dom("running"), (A.SHUTDOWN, A.REMOVE), False, id="delete-running"
    ),
    pytest.param(
        "Always", False, True, dom("shutoff", "shutdown"), (A.REMOVE,), False, id="delete-stopped"
    ),
    pytest.param("Always", False, True, None, (), False, id="delete-gone"),
]


@pytest.mark.parametrize(("strategy", "paused", "deleting", "domain", "actions", "restart"), CASES)
def test_plan(
    strategy: RunStrategy,
    paused: bool,
    deleting: bool,
    domain: DomainObservation | None,
    actions: tuple[Action, ...],
    restart: bool,
) -> None:
    got = convergence.plan(run_strategy=strategy, paused=paused, deleting=deleting, domain=domain)
    assert got.actions == actions
    assert got.restart is restart
