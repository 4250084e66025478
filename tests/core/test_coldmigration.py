"""core.coldmigration: the steps that ready a domain for a cold move, and who cannot move."""

from __future__ import annotations

import pytest

from kubevisor.core import coldmigration
from kubevisor.core.coldmigration import Step
from kubevisor.core.convergence import DomainState

S = DomainState


@pytest.mark.parametrize(
    ("state", "steps"),
    [
        pytest.param(S.RUNNING, (Step.SHUTDOWN, Step.START_PAUSED), id="running-shut-down-first"),
        pytest.param(S.BLOCKED, (Step.SHUTDOWN, Step.START_PAUSED), id="blocked-is-running"),
        pytest.param(S.SHUTDOWN, (Step.SHUTDOWN, Step.START_PAUSED), id="shutting-down-waited-for"),
        pytest.param(
            S.PAUSED,
            (Step.RESUME, Step.SHUTDOWN, Step.START_PAUSED),
            id="paused-resumed-to-hear-the-power-button",
        ),
        pytest.param(S.SHUTOFF, (Step.START_PAUSED,), id="off-only-started-paused"),
        pytest.param(S.CRASHED, (Step.START_PAUSED,), id="crashed-only-started-paused"),
    ],
)
def test_preparation_ends_started_paused(state: DomainState, steps: tuple[Step, ...]) -> None:
    chosen = coldmigration.preparation(state)
    assert chosen == steps
    assert chosen[-1] is Step.START_PAUSED
    # The guest is off before the domain starts again: nothing of its run is moved.
    assert Step.SHUTDOWN in chosen or state in (S.SHUTOFF, S.CRASHED)


def test_every_state_has_steps_or_a_reason() -> None:
    for state in DomainState:
        try:
            steps = coldmigration.preparation(state)
        except ValueError as refused:
            assert state.value in str(refused)
        else:
            assert steps[-1] is Step.START_PAUSED


@pytest.mark.parametrize(
    ("state", "message"),
    [
        pytest.param(None, "not defined on the source", id="no-domain"),
        pytest.param(S.PMSUSPENDED, "pmsuspended on the source", id="suspended-to-ram"),
        pytest.param(S.NOSTATE, "nostate on the source", id="no-state"),
    ],
)
def test_a_domain_that_cannot_move_says_why(state: DomainState | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        coldmigration.preparation(state)


@pytest.mark.parametrize(
    ("source_type", "refused"),
    [
        pytest.param("qemu", None, id="qemu-moves"),
        pytest.param("kvm", None, id="kvm-moves"),
        pytest.param("lxc", "lxc hosts cannot move VMs cold either", id="lxc-cannot"),
        pytest.param("vmware", "vmware hosts cannot move VMs cold either", id="vmware-cannot"),
    ],
)
def test_refusal(source_type: str, refused: str | None) -> None:
    said = coldmigration.refusal(source_type)
    if refused is None:
        assert said is None
    else:
        assert said is not None and refused in said and "stop the VM" in said
