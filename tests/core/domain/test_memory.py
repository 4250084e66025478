"""Memory configurators: how memory is bound to the placed host cells, and where that
binding cannot be enforced."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from kubevisor.core.domain import converter
from kubevisor.core.domain.host import HostEnvironment

from .builders import vm

TWO_CELLS = vm(
    {
        "cpu": {"vcpus": 2, "policy": "dedicated"},
        "memory": {"size": "256Mi"},
        "numa": {"cells": [{"cpus": [0], "memory": "128Mi"}, {"cpus": [1], "memory": "128Mi"}]},
    },
    status={
        "placement": {
            "cells": [
                {"guestCell": 0, "hostCell": 0, "vcpuPins": [{"vcpu": 0, "pcpu": 0}]},
                {"guestCell": 1, "hostCell": 1, "vcpuPins": [{"vcpu": 1, "pcpu": 1}]},
            ]
        }
    },
)


@pytest.mark.parametrize(
    ("controllers", "mode"),
    [
        pytest.param(None, "strict", id="unknown-controllers-assumed"),
        pytest.param(frozenset({"cpuset", "memory"}), "strict", id="cpuset-controller"),
        pytest.param(frozenset({"cpu", "memory"}), "restrictive", id="no-cpuset-controller"),
        pytest.param(frozenset(), "restrictive", id="no-cgroups-at-all"),
    ],
)
def test_memory_is_bound_strictly_only_where_the_cpuset_controller_backs_it(
    controllers: frozenset[str] | None, mode: str
) -> None:
    """Strict binding without cpuset rests on QEMU's mbind alone, which fails the start on
    cells the kernel does not have (the testbed's synthetic ones); restrictive starts but
    binds nothing there, and says so."""
    host = HostEnvironment(domain_type="qemu", cgroup_controllers=controllers)
    root = ET.fromstring(converter.render(TWO_CELLS, host=host))
    memory = root.find("numatune/memory")
    assert memory is not None and (memory.get("mode"), memory.get("nodeset")) == (mode, "0-1")
    memnodes = [(m.get("cellid"), m.get("mode"), m.get("nodeset")) for m in root.iter("memnode")]
    assert memnodes == [("0", mode, "0"), ("1", mode, "1")]
    unbound = [line for line in converter.unenforced_limits(TWO_CELLS.spec, host) if "numa" in line]
    assert bool(unbound) is (mode == "restrictive")


@pytest.mark.parametrize(
    ("spec", "reported"),
    [
        pytest.param({"cpu": {"vcpus": 1, "policy": "dedicated"}}, True, id="dedicated"),
        pytest.param(
            {"memory": {"size": "64Mi", "hugepages": {"pageSize": "2Mi"}}}, True, id="hugepages"
        ),
        pytest.param({"cpu": {"vcpus": 1}}, False, id="shared-without-numa"),
    ],
)
def test_unbound_memory_is_reported_only_for_vms_placement_puts_on_cells(
    spec: dict[str, Any], reported: bool
) -> None:
    machine = vm({"memory": {"size": "64Mi"}, **spec})
    host = HostEnvironment(domain_type="qemu", cgroup_controllers=frozenset())
    unbound = [line for line in converter.unenforced_limits(machine.spec, host) if "numa" in line]
    assert bool(unbound) is reported
