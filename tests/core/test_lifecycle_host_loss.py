"""core/lifecycle.py: which run strategies start a VM elsewhere after its host is lost."""

from __future__ import annotations

from typing import get_args

import pytest

from kubevisor.core import lifecycle
from kubevisor.core.lifecycle import Exit, RunStrategy


@pytest.mark.parametrize(
    ("strategy", "restarts"),
    [
        pytest.param("Always", True, id="always-restarts"),
        pytest.param("RerunOnFailure", True, id="rerun-on-failure-restarts"),
        pytest.param("Once", False, id="once-does-not"),
        pytest.param("Manual", False, id="manual-does-not"),
        pytest.param("Halted", False, id="halted-does-not"),
    ],
)
def test_restarts_after_host_loss(strategy: RunStrategy, restarts: bool) -> None:
    assert lifecycle.restarts_after_host_loss(strategy) is restarts


@pytest.mark.parametrize("strategy", get_args(RunStrategy))
def test_host_loss_counts_as_a_crash(strategy: RunStrategy) -> None:
    crashed = lifecycle.intent(strategy, last_exit=Exit.CRASHED).run
    assert lifecycle.restarts_after_host_loss(strategy) is crashed
