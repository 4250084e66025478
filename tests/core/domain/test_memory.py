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
    unbound = [line for line in converter.unenforced_limits(TWO_CELLS, host) if "numa" in line]
    assert bool(unbound) is (mode == "restrictive")


ONE_CELL = {"cells": [{"guestCell": 0, "hostCell": 1, "memory": "64Mi"}]}


@pytest.mark.parametrize(
    ("spec", "placement", "reported"),
    [
        pytest.param(
            {"cpu": {"vcpus": 1, "policy": "dedicated"}},
            {"cells": [{"guestCell": 0, "hostCell": 1, "vcpuPins": [{"vcpu": 0, "pcpu": 3}]}]},
            True,
            id="dedicated",
        ),
        pytest.param(
            {"memory": {"size": "64Mi", "hugepages": {"pageSize": "2Mi"}}},
            ONE_CELL,
            True,
            id="hugepages",
        ),
        pytest.param({"cpu": {"vcpus": 1}}, None, False, id="shared-without-numa"),
        pytest.param(
            {"devices": {"pci": [{"alias": "gpu"}]}},
            {"pciDevices": [{"alias": "gpu", "address": "0000:af:00.0"}]},
            False,
            id="placed-devices-but-no-cells",
        ),
        pytest.param(
            {"cpu": {"vcpus": 1, "policy": "dedicated"}}, None, False, id="not-placed-yet"
        ),
    ],
)
def test_unbound_memory_is_reported_only_for_vms_placement_puts_on_cells(
    spec: dict[str, Any], placement: dict[str, Any] | None, reported: bool
) -> None:
    """What placement decided is what <numatune> renders, so it is what is reported: the
    rule for which VMs get host cells lives in placement alone (Request.numa_aware)."""
    machine = vm(
        {"memory": {"size": "64Mi"}, **spec},
        status={"placement": placement} if placement is not None else None,
    )
    host = HostEnvironment(domain_type="qemu", cgroup_controllers=frozenset())
    unbound = [line for line in converter.unenforced_limits(machine, host) if "numa" in line]
    assert bool(unbound) is reported
    numatune = ET.fromstring(converter.render(machine, host=host)).find("numatune")
    assert (numatune is not None) is reported
