"""Flavors on a real kube-apiserver with the controller process (issue 22, points 1 and 4):
the shipped flavors are accepted, a VM from a flavor is placed with the flavor's size and
records the revision it runs, a field set both in a VM and its flavor is refused naming
it (FlavorConflict), a missing flavor says so (FlavorNotFound) until it is created, and an
edited flavor reaches a VM that is not running but not one that runs.

The control plane is this module's own (tests/handlers/conftest.py): the e2e stack's
controller must not act on these VMs. No agent runs: bound VMs stay Scheduled, which is
all the controller's part needs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import builders
from harness import REPO, ManagedProcess, eventually
from kubevisor.api import effective
from kubevisor.testbed.controlplane import ControlPlane

from .apiserver import NAMESPACE, apply, get, own_plane, patch_status, ready_host

pytestmark = pytest.mark.apiserver

SHIPPED = REPO / "deploy" / "manifests" / "components" / "flavors" / "flavors.yaml"
API = "kubevisor.io/v1alpha1"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with own_plane(tmp_path_factory.mktemp("flavors-plane")) as started:
        ready_host(started, "h1", cpus=16, memory="32Gi")
        started.kubectl("apply", "-f", str(SHIPPED))
        yield started


def vm(name: str, **spec: Any) -> dict[str, Any]:
    return builders.vm(name, namespace=NAMESPACE, **{"runStrategy": "Always", **spec})


def status(plane: ControlPlane, name: str) -> dict[str, Any]:
    return dict(get(plane, "vm", name, "-n", NAMESPACE).get("status") or {})


def scheduled(plane: ControlPlane, name: str) -> tuple[str, str, str] | None:
    for found in status(plane, name).get("conditions") or []:
        if found["type"] == "Scheduled" and found["status"] == "False":
            return found["status"], found["reason"], found["message"]
    return None


def placed(plane: ControlPlane, name: str) -> dict[str, Any]:
    def bound() -> dict[str, Any] | None:
        found = status(plane, name)
        return found if found.get("host") else None

    got: dict[str, Any] = eventually(bound, timeout=30, what=f"{name} placed")
    return got


def test_every_shipped_flavor_is_accepted(plane: ControlPlane, controller: ManagedProcess) -> None:
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(SHIPPED.read_text())]
    listed = plane.kubectl("get", "vmcf", "-o", "name").stdout.split()
    assert sorted(listed) == sorted(f"virtualmachineclusterflavor.kubevisor.io/{n}" for n in names)
    header = plane.kubectl("get", "vmcf", "m1.medium").stdout.split()
    assert header[:5] == ["NAME", "VCPUS", "MEMORY", "CPU", "POLICY"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({}, "memory is required unless flavor names a flavor", id="no-memory"),
        pytest.param(
            {"flavor": {"name": "m1.small", "kind": "Nova"}},
            "spec.flavor.kind: Unsupported value",
            id="unknown-kind",
        ),
    ],
)
def test_the_api_server_refuses(plane: ControlPlane, spec: dict[str, Any], message: str) -> None:
    refused = plane.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(vm("bad", **spec)), check=False
    )
    assert refused.returncode != 0 and message in refused.stderr, refused.stderr


def test_a_vm_from_a_flavor_is_placed_with_its_size(
    plane: ControlPlane, controller: ManagedProcess
) -> None:
    apply(plane, vm("medium", flavor={"name": "m1.medium"}))
    got = placed(plane, "medium")
    shipped = next(
        d["spec"]
        for d in yaml.safe_load_all(SHIPPED.read_text())
        if d["metadata"]["name"] == "m1.medium"
    )
    assert got["flavor"] == {
        "name": "m1.medium",
        "kind": "VirtualMachineClusterFlavor",
        "revision": effective.revision(shipped),
        "spec": shipped,
    }
    size = got["placement"]["size"]
    assert (size["vcpus"], size["memory"], size["cpuPolicy"]) == (2, "4Gi", "shared")
    row = plane.kubectl("get", "vm", "medium", "-n", NAMESPACE).stdout.splitlines()[1].split()
    assert row[3:6] == ["2", "4Gi", "m1.medium"]


def test_a_field_in_both_is_refused_naming_it(
    plane: ControlPlane, controller: ManagedProcess
) -> None:
    apply(plane, vm("both", flavor={"name": "m1.small"}, cpu={"vcpus": 4}, memory={"size": "1Gi"}))
    got = eventually(lambda: scheduled(plane, "both"), timeout=30, what="both refused")
    assert got == (
        "False",
        "FlavorConflict",
        "set both in the VM and in its flavor m1.small: cpu.vcpus, memory.size "
        "(remove them from one of the two)",
    )
    assert status(plane, "both").get("host") is None


def test_a_missing_flavor_is_said_until_it_exists(
    plane: ControlPlane, controller: ManagedProcess
) -> None:
    apply(plane, vm("later", flavor={"name": "big", "kind": "VirtualMachineFlavor"}))
    got = eventually(lambda: scheduled(plane, "later"), timeout=30, what="later refused")
    assert got[1:] == (
        "FlavorNotFound",
        f"VirtualMachineFlavor big not found in namespace {NAMESPACE}",
    )
    apply(
        plane,
        {
            "apiVersion": API,
            "kind": "VirtualMachineFlavor",
            "metadata": {"name": "big", "namespace": NAMESPACE},
            "spec": {"cpu": {"vcpus": 3}, "memory": {"size": "3Gi"}},
        },
    )
    assert placed(plane, "later")["placement"]["size"]["vcpus"] == 3


def test_an_edited_flavor_reaches_a_vm_not_running_but_not_a_running_one(
    plane: ControlPlane, controller: ManagedProcess, tmp_path: Path
) -> None:
    flavor = {
        "apiVersion": API,
        "kind": "VirtualMachineFlavor",
        "metadata": {"name": "edited", "namespace": NAMESPACE},
        "spec": {"cpu": {"vcpus": 1}, "memory": {"size": "1Gi"}},
    }
    apply(plane, flavor)
    for name in ("runs", "waits"):
        apply(plane, vm(name, flavor={"name": "edited", "kind": "VirtualMachineFlavor"}))
        placed(plane, name)
    # As its agent would say once the domain runs.
    patch_status(plane, "vm", "runs", "-n", NAMESPACE, status={"created": True, "phase": "Running"})
    old = status(plane, "runs")["flavor"]["revision"]
    apply(plane, {**flavor, "spec": {"cpu": {"vcpus": 2}, "memory": {"size": "1Gi"}}})
    new = effective.revision({"cpu": {"vcpus": 2}, "memory": {"size": "1Gi"}})
    eventually(
        lambda: status(plane, "waits")["flavor"]["revision"] == new or None,
        timeout=30,
        what="the VM not running records the edit",
    )
    assert status(plane, "runs")["flavor"]["revision"] == old != new
