"""Run strategies and the phase transition table."""

from __future__ import annotations

import pytest

from kubevisor.core import lifecycle
from kubevisor.core.lifecycle import Exit, IllegalTransition

STRATEGIES: tuple[lifecycle.RunStrategy, ...] = (
    "Always",
    "RerunOnFailure",
    "Once",
    "Manual",
    "Halted",
)

# (strategy, last exit) -> should run; the table in the module docstring, row by row.
EXPECTED = {
    ("Always", Exit.NONE): True,
    ("Always", Exit.SHUTDOWN): True,
    ("Always", Exit.CRASHED): True,
    ("Always", Exit.DESTROYED): True,
    ("RerunOnFailure", Exit.NONE): True,
    ("RerunOnFailure", Exit.SHUTDOWN): False,
    ("RerunOnFailure", Exit.CRASHED): True,
    ("RerunOnFailure", Exit.DESTROYED): False,
    ("Once", Exit.NONE): True,
    ("Once", Exit.SHUTDOWN): False,
    ("Once", Exit.CRASHED): False,
    ("Once", Exit.DESTROYED): False,
    ("Manual", Exit.NONE): True,
    ("Manual", Exit.SHUTDOWN): False,
    ("Manual", Exit.CRASHED): False,
    ("Manual", Exit.DESTROYED): False,
    ("Halted", Exit.NONE): False,
    ("Halted", Exit.SHUTDOWN): False,
    ("Halted", Exit.CRASHED): False,
    ("Halted", Exit.DESTROYED): False,
}


def test_the_expectation_table_is_total() -> None:
    assert set(EXPECTED) == {(s, e) for s in STRATEGIES for e in Exit}


@pytest.mark.parametrize(
    ("strategy", "exit_", "run"),
    [pytest.param(s, e, r, id=f"{s}-after-{e}") for (s, e), r in EXPECTED.items()],
)
def test_intent(strategy: lifecycle.RunStrategy, exit_: Exit, run: bool) -> None:
    got = lifecycle.intent(strategy, last_exit=exit_)
    assert got.run is run
    assert got.restart is (run and exit_ is not Exit.NONE)


def test_every_phase_has_a_row() -> None:
    assert set(lifecycle._NEXT) == set(lifecycle.PHASES)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param("Scheduled", "Running", id="scheduled-to-running"),
        pytest.param("Running", "Migrating", id="running-to-migrating"),
        pytest.param("Stopped", "Starting", id="stopped-to-starting"),
        pytest.param("Running", "Terminating", id="anything-to-terminating"),
        pytest.param("Paused", "Unknown", id="anything-to-unknown"),
        pytest.param("Unknown", "Running", id="unknown-to-anything"),
        pytest.param(None, "Failed", id="first-phase"),
    ],
)
def test_legal_transitions(old: lifecycle.Phase | None, new: lifecycle.Phase) -> None:
    assert lifecycle.check_transition(old, new) == new


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param("Pending", "Running", id="pending-cannot-run-unbound"),
        pytest.param("Stopped", "Migrating", id="stopped-cannot-migrate"),
        pytest.param("Terminating", "Running", id="terminating-is-final"),
        pytest.param("Unschedulable", "Paused", id="unschedulable-cannot-pause"),
    ],
)
def test_illegal_transitions_raise(old: lifecycle.Phase, new: lifecycle.Phase) -> None:
    with pytest.raises(IllegalTransition, match=f"from {old} to {new}"):
        lifecycle.check_transition(old, new)
