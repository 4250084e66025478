"""The effective spec: a VM's own fields and its flavor's, merged, conflicts refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kubevisor.api import effective
from kubevisor.api.virtualmachine import VirtualMachine

SMALL = {
    "cpu": {"vcpus": 2, "policy": "dedicated"},
    "memory": {"size": "2Gi"},
    "firmware": {"type": "uefi", "secureBoot": False},
}


@pytest.mark.parametrize(
    ("declared", "flavor", "merged"),
    [
        pytest.param(
            {"runStrategy": "Always"},
            SMALL,
            {"runStrategy": "Always", **SMALL},
            id="flavor-gives-everything",
        ),
        pytest.param(
            {"cpu": {"model": "host-model"}, "memory": {"size": "1Gi"}},
            {"cpu": {"vcpus": 4}},
            {"cpu": {"vcpus": 4, "model": "host-model"}, "memory": {"size": "1Gi"}},
            id="cpu-fields-from-both",
        ),
        pytest.param(
            {"disks": [{"name": "root", "image": "a.qcow2"}, {"name": "d", "cache": "none"}]},
            {"diskDefaults": {"io": "native"}},
            {
                "disks": [
                    {"name": "root", "image": "a.qcow2", "io": "native"},
                    {"name": "d", "cache": "none", "io": "native"},
                ]
            },
            id="disk-defaults-fill-every-disk",
        ),
        pytest.param(
            {"memory": {"size": "1Gi"}},
            {"numa": {"cells": [{"cpus": [0], "memory": "1Gi"}]}},
            {"memory": {"size": "1Gi"}, "numa": {"cells": [{"cpus": [0], "memory": "1Gi"}]}},
            id="numa-whole-from-the-flavor",
        ),
    ],
)
def test_merge(declared: dict[str, Any], flavor: dict[str, Any], merged: dict[str, Any]) -> None:
    before = repr((declared, flavor))
    assert effective.merge(declared, flavor, name="f") == merged
    assert repr((declared, flavor)) == before  # inputs untouched


@pytest.mark.parametrize(
    ("declared", "flavor", "fields"),
    [
        pytest.param({"cpu": {"vcpus": 1}}, SMALL, ["cpu.vcpus"], id="vcpus"),
        pytest.param(
            {"cpu": {"vcpus": 2, "policy": "shared"}, "memory": {"size": "1Gi"}},
            SMALL,
            ["cpu.vcpus", "cpu.policy", "memory.size"],
            id="every-field-named",
        ),
        pytest.param(
            {"firmware": {"type": "bios"}}, SMALL, ["firmware"], id="firmware-taken-whole"
        ),
        pytest.param(
            {"devices": {"pci": [{"alias": "a"}]}},
            {"devices": {"pci": [{"alias": "b"}]}},
            ["devices"],
            id="devices",
        ),
        pytest.param(
            {"disks": [{"name": "root", "cache": "writeback"}]},
            {"diskDefaults": {"cache": "none"}},
            ["disks[root].cache"],
            id="a-disk-setting-a-default",
        ),
    ],
)
def test_conflicts_name_every_field(
    declared: dict[str, Any], flavor: dict[str, Any], fields: list[str]
) -> None:
    with pytest.raises(effective.FlavorConflict) as raised:
        effective.merge(declared, flavor, name="m1.small")
    assert raised.value.fields == fields
    assert str(raised.value) == (
        f"set both in the VM and in its flavor m1.small: {', '.join(fields)} "
        "(remove them from one of the two)"
    )


def test_revision_is_stable_and_tracks_changes() -> None:
    reordered = {"memory": {"size": "2Gi"}, "firmware": SMALL["firmware"], "cpu": SMALL["cpu"]}
    assert effective.revision(SMALL) == effective.revision(reordered)
    bigger = {**SMALL, "cpu": {"vcpus": 4, "policy": "dedicated"}}
    assert effective.revision(bigger) != effective.revision(SMALL)
    assert len(effective.revision(SMALL)) == 16


def _vm(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj = {"kind": "VirtualMachine", "metadata": {"name": "a", "namespace": "n"}, "spec": spec}
    return obj if status is None else {**obj, "status": status}


RECORDED = {"name": "m1.small", "kind": "VirtualMachineClusterFlavor", "revision": "0" * 16}


def test_a_vm_reads_as_its_effective_spec() -> None:
    vm = VirtualMachine.model_validate(
        _vm(
            {"flavor": {"name": "m1.small"}, "disks": [{"name": "root", "image": "a.qcow2"}]},
            {"flavor": {**RECORDED, "spec": {**SMALL, "diskDefaults": {"cache": "writeback"}}}},
        )
    )
    assert (vm.spec.cpu.vcpus, vm.spec.cpu.policy, vm.spec.memory.size) == (2, "dedicated", "2Gi")
    assert vm.spec.firmware is not None and vm.spec.firmware.type == "uefi"
    assert vm.spec.disks[0].cache == "writeback"
    assert vm.spec.flavor is not None and vm.spec.flavor.name == "m1.small"


def test_a_vm_without_flavor_keeps_the_model_defaults() -> None:
    vm = VirtualMachine.model_validate(
        _vm({"memory": {"size": "1Gi"}, "disks": [{"name": "r", "size": "1Gi"}]})
    )
    assert (vm.spec.cpu.vcpus, vm.spec.cpu.policy, vm.spec.disks[0].cache) == (1, "shared", "none")


@pytest.mark.parametrize(
    ("spec", "status", "message"),
    [
        pytest.param(
            {"flavor": {"name": "m1.small"}},
            None,
            "flavor: m1.small is not resolved yet",
            id="not-recorded-yet",
        ),
        pytest.param(
            {"flavor": {"name": "m1.small"}, "cpu": {"vcpus": 8}},
            {"flavor": {**RECORDED, "spec": SMALL}},
            "set both in the VM and in its flavor m1.small: cpu.vcpus",
            id="conflict-after-recording",
        ),
        pytest.param(
            {"flavor": {"name": "m1.small"}, "numa": {"cells": [{"cpus": [0], "memory": "2Gi"}]}},
            {"flavor": {**RECORDED, "spec": SMALL}},
            "numa.cells cpus must partition 0..cpu.vcpus-1",
            id="together-invalid",
        ),
    ],
)
def test_an_unrunnable_flavor_makes_the_vm_unreadable(
    spec: dict[str, Any], status: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace(".", r"\.")):
        VirtualMachine.model_validate(_vm(spec, status))
