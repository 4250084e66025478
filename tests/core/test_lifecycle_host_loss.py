"""core/lifecycle.py: which run strategies start a VM elsewhere after its host is lost,
and what the failover event says about its disks."""

from __future__ import annotations

from typing import get_args

import pytest

from kubevisor.api.virtualmachine import StorageLocation, VmStorage
from kubevisor.core import lifecycle
from kubevisor.core.lifecycle import Exit, Notice, RunStrategy


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


def _storage(location: StorageLocation, shared: str | None = None) -> VmStorage:
    return VmStorage(location=location, shared_storage=shared, host="h1")


@pytest.mark.parametrize(
    ("storage", "target_storage", "expected"),
    [
        pytest.param(
            _storage("Shared", "nfs"),
            "nfs",
            Notice(
                "Normal",
                "FailingOver",
                "host h1 was lost: restarts on h2 with its disks from shared storage nfs",
            ),
            id="shared-storage-on-the-target",
        ),
        pytest.param(
            _storage("Shared", "nfs"),
            "ceph",
            Notice(
                "Warning",
                "FailingOver",
                "host h1 was lost: restarts on h2 from its image: "
                "h2 lacks shared storage nfs, so the changes to its disks there are not used",
            ),
            id="shared-storage-the-target-lacks",
        ),
        pytest.param(
            _storage("Shared", "nfs"),
            None,
            Notice(
                "Warning",
                "FailingOver",
                "host h1 was lost: restarts on h2 from its image: "
                "h2 lacks shared storage nfs, so the changes to its disks there are not used",
            ),
            id="target-without-shared-storage",
        ),
        pytest.param(
            _storage("Local"),
            "nfs",
            Notice(
                "Warning",
                "FailingOver",
                "host h1 was lost: restarts on h2 from its image: "
                "the changes to its local disks on h1 are lost",
            ),
            id="local-disks",
        ),
        pytest.param(
            None,
            None,
            Notice(
                "Warning",
                "FailingOver",
                "host h1 was lost: restarts on h2 from its image: "
                "the changes to its local disks on h1 are lost",
            ),
            id="storage-never-reported-counts-as-local",
        ),
    ],
)
def test_failover_notice_says_what_becomes_of_the_disks(
    storage: VmStorage | None, target_storage: str | None, expected: Notice
) -> None:
    notice = lifecycle.failover_notice(
        lost="h1", target="h2", storage=storage, target_storage=target_storage
    )
    assert notice == expected
