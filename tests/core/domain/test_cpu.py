"""CPU configurators: limits only where the host's cgroups can enforce them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from kubevisor.core.domain import converter
from kubevisor.core.domain.document import DomainError
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


SHARED_SET = frozenset({0, 1})
PINNED = {"cells": [{"guestCell": 0, "hostCell": 0, "vcpuPins": [{"vcpu": 0, "pcpu": 3}]}]}


@pytest.mark.parametrize(
    ("cpu", "placement", "shared_set", "floating", "pins", "emulator"),
    [
        pytest.param(
            {"vcpus": 2}, None, SHARED_SET, "0-1", [], "0-1", id="shared-on-the-hosts-shared-set"
        ),
        pytest.param({"vcpus": 2}, None, None, None, [], None, id="shared-on-a-host-without-one"),
        pytest.param(
            {"vcpus": 2},
            {"cells": [{"guestCell": 0, "hostCell": 1}], "sharedCpus": [4, 5]},
            SHARED_SET,
            "4-5",
            [],
            "4-5",
            id="shared-on-the-shared-cpus-of-its-placed-cell",
        ),
        pytest.param(
            {"vcpus": 1, "policy": "dedicated"},
            PINNED,
            SHARED_SET,
            None,
            [("0", "3")],
            "3",
            id="dedicated-pinned-with-its-emulator",
        ),
        pytest.param(
            {"vcpus": 1, "policy": "dedicated", "isolateEmulatorThread": True},
            {**PINNED, "emulatorPins": [2]},
            SHARED_SET,
            None,
            [("0", "3")],
            "2",
            id="dedicated-with-an-isolated-emulator",
        ),
    ],
)
def test_shared_vcpus_float_where_dedicated_ones_are_not_pinned(
    cpu: dict[str, Any],
    placement: dict[str, Any] | None,
    shared_set: frozenset[int] | None,
    floating: str | None,
    pins: list[tuple[str, str]],
    emulator: str | None,
) -> None:
    """Issue 15: a shared VM without NUMA cells floated over every host CPU, those pinned
    to dedicated VMs too. It runs on the host's shared set, its emulator threads with it."""
    machine = vm(
        {"memory": {"size": "64Mi"}, "cpu": cpu},
        status={"placement": placement} if placement is not None else None,
    )
    host = HostEnvironment(domain_type="qemu", shared_cpus=shared_set)
    root = ET.fromstring(converter.render(machine, host=host))
    vcpu = root.find("vcpu")
    assert vcpu is not None and vcpu.get("cpuset") == floating
    assert [(p.get("vcpu"), p.get("cpuset")) for p in root.iter("vcpupin")] == pins
    emulatorpin = root.find("cputune/emulatorpin")
    assert (emulatorpin.get("cpuset") if emulatorpin is not None else None) == emulator


def test_a_shared_set_that_leaves_no_cpu_is_refused() -> None:
    host = HostEnvironment(domain_type="qemu", shared_cpus=frozenset())
    with pytest.raises(DomainError, match="leaves no CPU for shared VMs"):
        converter.render(vm({"memory": {"size": "64Mi"}}), host=host)


def test_a_container_runs_on_the_shared_set_and_has_no_emulator_to_pin() -> None:
    machine = vm({"memory": {"size": "64Mi"}, "container": {"rootfs": "/srv/web"}})
    host = HostEnvironment(domain_type="lxc", shared_cpus=SHARED_SET)
    root = ET.fromstring(converter.render(machine, host=host))
    vcpu = root.find("vcpu")
    assert vcpu is not None and vcpu.get("cpuset") == "0-1"
    assert root.find("cputune") is None
