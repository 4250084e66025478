"""Which flavor revision a VM runs, and why it cannot run one (core.flavors)."""

from __future__ import annotations

from typing import Any

import pytest

from kubevisor.api import effective
from kubevisor.core import flavors
from kubevisor.core.flavors import Refusal

SMALL = {"cpu": {"vcpus": 1}, "memory": {"size": "1Gi"}}
LARGE = {"cpu": {"vcpus": 4}, "memory": {"size": "8Gi"}}


def flavor(spec: dict[str, Any], name: str = "m1.small", namespace: str | None = None) -> Any:
    meta = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    return {"metadata": meta, "spec": spec}


def vm(
    *, reference: dict[str, Any] | None = None, status: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    body = {"runStrategy": "Always", **spec}
    if reference is not None:
        body["flavor"] = reference
    return {"metadata": {"name": "a", "namespace": "team"}, "spec": body, "status": status or {}}


CLUSTER = "VirtualMachineClusterFlavor"
RUNNING = {"created": True, "phase": "Running"}


def recorded(spec: dict[str, Any], name: str = "m1.small") -> dict[str, Any]:
    return flavors.record(CLUSTER, flavor(spec, name))


def test_a_vm_without_flavor_records_none() -> None:
    assert flavors.resolve(vm(memory={"size": "1Gi"}), None) is None


def test_a_new_vm_records_the_flavor_as_it_is() -> None:
    got = flavors.resolve(vm(reference={"name": "m1.small"}), flavor(SMALL))
    assert got == {
        "name": "m1.small",
        "kind": CLUSTER,
        "revision": effective.revision(SMALL),
        "spec": SMALL,
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(RUNNING, SMALL, id="running-keeps-its-revision"),
        pytest.param({"created": True, "phase": "Paused"}, SMALL, id="paused-keeps-it"),
        pytest.param({"created": True, "phase": "Stopped"}, LARGE, id="stopped-takes-the-edit"),
        pytest.param({"created": False, "phase": "Scheduled"}, LARGE, id="not-started-takes-it"),
    ],
)
def test_an_edited_flavor_reaches_a_vm_at_its_next_start(
    status: dict[str, Any], expected: dict[str, Any]
) -> None:
    before = {**status, "flavor": recorded(SMALL)}
    got = flavors.resolve(vm(reference={"name": "m1.small"}, status=before), flavor(LARGE))
    assert isinstance(got, dict) and got["spec"] == expected
    assert flavors.same(got, recorded(expected))


def test_a_running_vm_naming_another_flavor_records_it_for_its_resize() -> None:
    before = {**RUNNING, "flavor": recorded(SMALL)}
    got = flavors.resolve(
        vm(reference={"name": "m1.large"}, status=before), flavor(LARGE, "m1.large")
    )
    assert isinstance(got, dict) and (got["name"], got["spec"]) == ("m1.large", LARGE)


def test_a_running_vm_keeps_its_record_when_the_flavor_is_deleted() -> None:
    before = {**RUNNING, "flavor": recorded(SMALL)}
    got = flavors.resolve(vm(reference={"name": "m1.small"}, status=before), None)
    assert got == recorded(SMALL)


@pytest.mark.parametrize(
    ("obj", "found", "refusal"),
    [
        pytest.param(
            vm(reference={"name": "m1.tiny"}),
            None,
            Refusal("FlavorNotFound", "VirtualMachineClusterFlavor m1.tiny not found"),
            id="cluster-flavor-not-found",
        ),
        pytest.param(
            vm(reference={"name": "tiny", "kind": "VirtualMachineFlavor"}),
            None,
            Refusal("FlavorNotFound", "VirtualMachineFlavor tiny not found in namespace team"),
            id="namespaced-flavor-not-found",
        ),
        pytest.param(
            vm(reference={"name": "m1.small"}, cpu={"vcpus": 2}, memory={"size": "2Gi"}),
            flavor(SMALL),
            Refusal(
                "FlavorConflict",
                "set both in the VM and in its flavor m1.small: cpu.vcpus, memory.size "
                "(remove them from one of the two)",
            ),
            id="conflict-names-the-fields",
        ),
        pytest.param(
            vm(reference={"name": "m1.small"}),
            flavor({"cpu": {"vcpus": 2}}),
            Refusal(
                "FlavorInvalid",
                "the VM and its flavor m1.small together are no valid spec: memory: Field required",
            ),
            id="neither-gives-memory",
        ),
    ],
)
def test_refusals(obj: dict[str, Any], found: Any, refusal: Refusal) -> None:
    assert flavors.resolve(obj, found) == refusal


def test_keys_of_a_vm_and_of_the_flavor_it_names_agree() -> None:
    named = vm(reference={"name": "tiny", "kind": "VirtualMachineFlavor"})
    assert flavors.key(named) == ("VirtualMachineFlavor", "team/tiny")
    assert flavors.object_key("VirtualMachineFlavor", flavor(SMALL, "tiny", "team")) == (
        flavors.key(named)
    )
    assert flavors.key(vm(reference={"name": "m1.small"})) == flavors.object_key(
        CLUSTER, flavor(SMALL)
    )
    assert flavors.key(vm(memory={"size": "1Gi"})) is None
