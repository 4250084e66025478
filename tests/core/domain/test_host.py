"""The host's shared CPUs, from its HypervisorHost spec as the agent reads it."""

from __future__ import annotations

import pytest

from kubevisor.core.domain import host


@pytest.mark.parametrize(
    ("shared", "dedicated", "expected"),
    [
        pytest.param(None, None, None, id="no-sets-every-cpu-is-shared"),
        pytest.param(None, "2-3", None, id="dedicated-only-nothing-to-float-over"),
        pytest.param("", None, None, id="empty-string-is-unset"),
        pytest.param("0-1", None, {0, 1}, id="shared-only"),
        pytest.param("0-1,4-7", "1-3", {0, 4, 5, 6, 7}, id="dedicated-cpus-left-out"),
        pytest.param("2", "2", set(), id="nothing-left"),
    ],
)
def test_shared_cpus(shared: str | None, dedicated: str | None, expected: set[int] | None) -> None:
    assert host.shared_cpus(cpu_shared_set=shared, cpu_dedicated_set=dedicated) == expected


def test_a_shared_set_that_is_not_a_cpuset_raises() -> None:
    with pytest.raises(ValueError, match="runs backwards"):
        host.shared_cpus(cpu_shared_set="3-1", cpu_dedicated_set=None)
