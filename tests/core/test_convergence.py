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


def situation(**changes: object) -> convergence.Situation:
    """A running VM that wants to run, bound here and staying: change what a case needs."""
    base: dict[str, object] = {
        "run_strategy": "Always",
        "paused": False,
        "deleting": False,
        "evicting": False,
        "migrating": False,
        "domain": dom("running"),
    }
    return convergence.Situation(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "actions"),
    [
        pytest.param(situation(), (), id="running-stays"),
        pytest.param(situation(domain=None), (A.DEFINE_AND_START,), id="missing-domain-starts"),
        pytest.param(
            situation(evicting=True), (A.SHUTDOWN, A.REMOVE), id="evicted-is-shut-down-and-removed"
        ),
        pytest.param(
            situation(evicting=True, domain=dom("shutoff", "shutdown")),
            (A.REMOVE,),
            id="evicted-and-stopped-is-removed",
        ),
        pytest.param(situation(migrating=True), (), id="migrating-is-left-to-libvirt"),
        pytest.param(
            situation(migrating=True, domain=None), (), id="migrating-domain-gone-not-restarted"
        ),
        pytest.param(
            situation(migrating=True, domain=dom("paused", "migration")),
            (),
            id="migrating-pause-not-resumed",
        ),
        pytest.param(
            situation(migrating=True, deleting=True),
            (A.SHUTDOWN, A.REMOVE),
            id="deleting-wins-over-migrating",
        ),
        pytest.param(
            situation(migrating=True, evicting=True), (), id="migrating-wins-over-evicting"
        ),
    ],
)
def test_decide(given: convergence.Situation, actions: tuple[Action, ...]) -> None:
    assert convergence.decide(given).actions == actions


def test_decide_counts_a_restart_only_when_it_starts_again() -> None:
    stopped = dom("shutoff", "shutdown")
    assert convergence.decide(situation(domain=stopped)).restart is True
    assert convergence.decide(situation(domain=stopped, migrating=True)).restart is False


@pytest.mark.parametrize(
    ("decided", "pulling", "actions"),
    [
        pytest.param(
            convergence.Plan((A.DEFINE_AND_START,)), True, (), id="start-waits-for-images"
        ),
        pytest.param(
            convergence.Plan((A.DEFINE_AND_START,)),
            False,
            (A.DEFINE_AND_START,),
            id="start-with-images-here",
        ),
    ],
)
def test_waiting_for_images(
    decided: convergence.Plan, pulling: bool, actions: tuple[Action, ...]
) -> None:
    assert convergence.needs_images(decided)
    assert convergence.waiting_for_images(decided, pulling=pulling).actions == actions


def test_only_a_start_needs_images() -> None:
    assert not convergence.needs_images(convergence.Plan((A.SHUTDOWN, A.REMOVE)))
    assert not convergence.needs_images(convergence.NOTHING)


@pytest.mark.parametrize(
    ("decided", "pending", "actions"),
    [
        pytest.param(
            convergence.Plan((A.DEFINE_AND_START,)), True, (), id="a-start-waits-for-the-claim"
        ),
        pytest.param(
            convergence.Plan((A.DEFINE_AND_START,)),
            False,
            (A.DEFINE_AND_START,),
            id="a-start-at-the-claimed-size",
        ),
        pytest.param(
            convergence.Plan((A.SHUTDOWN, A.REMOVE)),
            True,
            (A.SHUTDOWN, A.REMOVE),
            id="a-deletion-is-no-start",
        ),
        pytest.param(convergence.Plan((A.SUSPEND,)), True, (A.SUSPEND,), id="a-pause-is-no-start"),
    ],
)
def test_held_for_resize(
    decided: convergence.Plan, pending: bool, actions: tuple[Action, ...]
) -> None:
    assert convergence.held_for_resize(decided, pending=pending).actions == actions
