"""CPU sets held against the host's CPUs (placement.cpusets)."""

from __future__ import annotations

import pytest

from kubevisor.api import cpuset
from kubevisor.core.placement import cpusets

EIGHT = "0-7"


@pytest.mark.parametrize(
    ("dedicated", "shared", "present", "errors"),
    [
        pytest.param("0-3", "4-7", EIGHT, (), id="disjoint-sets-of-real-cpus"),
        pytest.param("", "0-7", EIGHT, (), id="every-cpu-shared"),
        pytest.param(
            "",
            "0-63",
            EIGHT,
            ("spec.cpuSharedSet names CPUs 8-63 the host does not have (it has 0-7)",),
            id="shared-set-beyond-the-host",
        ),
        pytest.param(
            "6-9,12",
            "0-5",
            EIGHT,
            ("spec.cpuDedicatedSet names CPUs 8-9,12 the host does not have (it has 0-7)",),
            id="dedicated-set-beyond-the-host",
        ),
        pytest.param(
            "0-4",
            "3-7",
            EIGHT,
            ("CPUs 3-4 are in both spec.cpuDedicatedSet and spec.cpuSharedSet",),
            id="overlapping-sets",
        ),
        pytest.param(
            "0-3,16",
            "2-7,16",
            "0-7,16-23",
            ("CPUs 2-3,16 are in both spec.cpuDedicatedSet and spec.cpuSharedSet",),
            id="non-contiguous-host-cpus",
        ),
        pytest.param(
            "0-9",
            "8-11",
            EIGHT,
            (
                "spec.cpuDedicatedSet names CPUs 8-9 the host does not have (it has 0-7)",
                "spec.cpuSharedSet names CPUs 8-11 the host does not have (it has 0-7)",
                "CPUs 8-9 are in both spec.cpuDedicatedSet and spec.cpuSharedSet",
            ),
            id="every-error-named",
        ),
        pytest.param("", "0-63", "", (), id="host-reports-no-cpus-nothing-to-hold-against"),
    ],
)
def test_errors(dedicated: str, shared: str, present: str, errors: tuple[str, ...]) -> None:
    found = cpusets.errors(
        dedicated=cpuset.parse(dedicated),
        shared=cpuset.parse(shared),
        present=cpuset.parse(present),
    )
    assert found == errors
