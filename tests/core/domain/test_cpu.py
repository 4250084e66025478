"""CPU configurators: limits only where the host's cgroups can enforce them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from kubevisor.core.domain import converter
from kubevisor.core.domain.host import HostEnvironment

from .builders import vm

TUNED = {"memory": {"size": "64Mi"}, "cpu": {"tune": {"shares": 512, "quotaMicroseconds": 5000}}}


@pytest.mark.parametrize(
    ("spec", "controllers", "enforced"),
    [
        pytest.param(TUNED, None, True, id="unknown-controllers-assumed"),
        pytest.param(TUNED, frozenset({"cpu", "memory"}), True, id="cpu-controller"),
        pytest.param(TUNED, frozenset({"memory"}), False, id="no-cpu-controller"),
        pytest.param(TUNED, frozenset(), False, id="no-cgroups-at-all"),
        pytest.param({"memory": {"size": "64Mi"}}, frozenset(), True, id="nothing-to-enforce"),
    ],
)
def test_cpu_limits_are_left_out_and_reported_where_cgroups_cannot_enforce_them(
    spec: dict[str, Any], controllers: frozenset[str] | None, enforced: bool
) -> None:
    machine = vm(spec)
    host = HostEnvironment(domain_type="qemu", cgroup_controllers=controllers)
    root = ET.fromstring(converter.render(machine, host=host))
    has_limits = root.find("cputune/shares") is not None
    assert has_limits is (enforced and "cpu" in spec and "tune" in spec["cpu"])
    unenforced = converter.unenforced_limits(machine, host)
    assert (unenforced == []) is enforced
    assert all("cpu.tune" in line for line in unenforced)
