"""Namespace quotas on a real kube-apiserver + etcd, with the controller process.

The API server accepts a standard ResourceQuota with kubevisor's resource names (and
refuses a fractional vCPU count itself); the controller's `status.used` and `status.hard`
of those names survive other writers of the same status (as kube-controller-manager's
quota controller, which keeps `used` values of resources it has no evaluator for) and
spec edits; `kubectl describe quota` shows used against hard. And the issue's scenario:
a 2-vCPU quota runs two 1-vCPU VMs, the third waits QuotaExceeded with the figures, and
deleting one places it.

The control plane is this module's own; no agent runs: bound VMs stay Scheduled, which
is all the controller's part needs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

import builders
from harness import ManagedProcess, eventually
from kubevisor.testbed.controlplane import ControlPlane

from .apiserver import apply, get, own_plane, ready_host

pytestmark = pytest.mark.apiserver

TEAM = "apps"
OTHER = "other"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with own_plane(tmp_path_factory.mktemp("quota-plane")) as started:
        started.kubectl("create", "namespace", OTHER)
        ready_host(started, "h1", cpus=16, memory="16Gi")
        yield started


def resource_quota(namespace: str, **hard: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "compute", "namespace": namespace},
        "spec": {"hard": hard},
    }


def vm(name: str) -> dict[str, Any]:
    return builders.vm(
        name, namespace=TEAM, runStrategy="Always", cpu={"vcpus": 1}, memory={"size": "64Mi"}
    )


def quota_status(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    return dict(get(plane, "resourcequota", "compute", "-n", namespace).get("status") or {})


def vm_status(plane: ControlPlane, name: str) -> dict[str, Any]:
    return dict(get(plane, "vm", name, "-n", TEAM).get("status") or {})


def scheduled(plane: ControlPlane, name: str) -> dict[str, Any] | None:
    conditions = vm_status(plane, name).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Scheduled"), None)


EVERY_NAME = {
    "kubevisor.io/vms": "10",
    "kubevisor.io/vcpus": "16",
    "kubevisor.io/memory": "64Gi",
    "kubevisor.io/dedicated-cpus": "4",
    "kubevisor.io/hugepages-2Mi": "4Gi",
    "kubevisor.io/hugepages-1Gi": "2Gi",
    "kubevisor.io/pci-gpu": "1",
    "kubevisor.io/local-disk": "500Gi",
    "pods": "5",
}


def test_the_api_server_takes_every_name_and_refuses_a_fractional_vcpu_count(
    plane: ControlPlane,
) -> None:
    apply(plane, resource_quota(OTHER, **EVERY_NAME))
    assert get(plane, "resourcequota", "compute", "-n", OTHER)["spec"]["hard"] == EVERY_NAME
    fractional = resource_quota(OTHER, **{"kubevisor.io/vcpus": "1.5"})
    refused = plane.kubectl("apply", "-f", "-", input=json.dumps(fractional), check=False)
    assert refused.returncode != 0
    assert 'spec.hard[kubevisor.io/vcpus]: Invalid value: "1500m": must be an integer' in (
        refused.stderr
    )


def test_used_is_written_kept_through_other_writers_and_shown_by_describe(
    plane: ControlPlane, controller: ManagedProcess
) -> None:
    apply(plane, resource_quota(OTHER, **EVERY_NAME))
    zero = {name: "0" for name in EVERY_NAME if name.startswith("kubevisor.io/")}
    eventually(lambda: quota_status(plane, OTHER).get("used") == zero, what="used written")
    # Another writer of the status (as the quota controller: an update of its own keys).
    theirs = {"status": {"hard": {"pods": "5"}, "used": {"pods": "2"}}}
    plane.kubectl(
        "patch", "resourcequota", "compute", "-n", OTHER, "--subresource=status",
        "--type=merge", "-p", json.dumps(theirs),
    )  # fmt: skip
    # A spec edit: the controller reads the new limit into status.hard.
    plane.kubectl(
        "patch", "resourcequota", "compute", "-n", OTHER, "--type=merge", "-p",
        json.dumps({"spec": {"hard": {"kubevisor.io/vcpus": "32"}}}),
    )  # fmt: skip
    eventually(
        lambda: quota_status(plane, OTHER)["hard"].get("kubevisor.io/vcpus") == "32",
        what="the new hard limit in status",
    )
    status = quota_status(plane, OTHER)
    assert status["used"] == {**zero, "pods": "2"}
    managers = {
        entry["manager"]
        for entry in get(plane, "resourcequota", "compute", "-n", OTHER, "--show-managed-fields")[
            "metadata"
        ]["managedFields"]
        if entry.get("subresource") == "status"
    }
    assert "kubevisor-controller" in managers
    described = plane.kubectl("describe", "quota", "compute", "-n", OTHER).stdout
    assert re.search(r"^kubevisor.io/vcpus\s+0\s+32$", described, re.MULTILINE), described


def test_two_1_vcpu_vms_run_in_a_2_vcpu_namespace_the_third_waits_until_one_goes(
    plane: ControlPlane, controller: ManagedProcess
) -> None:
    apply(plane, resource_quota(TEAM, **{"kubevisor.io/vcpus": "2"}))
    for name in ("a", "b"):
        apply(plane, vm(name))
        eventually(lambda name=name: vm_status(plane, name).get("host") == "h1", what=name)
    apply(plane, vm("c"))
    waiting = eventually(lambda: scheduled(plane, "c"), what="c's Scheduled condition")
    assert (waiting["status"], waiting["reason"], waiting["message"]) == (
        "False",
        "QuotaExceeded",
        "exceeds quota compute: kubevisor.io/vcpus requested 1, used 2, hard 2",
    )
    assert vm_status(plane, "c")["phase"] == "Pending"
    assert quota_status(plane, TEAM)["used"] == {"kubevisor.io/vcpus": "2"}
    plane.kubectl("delete", "vm", "a", "-n", TEAM, "--wait=false")
    eventually(lambda: vm_status(plane, "c").get("host") == "h1", what="c placed by itself")
    eventually(
        lambda: quota_status(plane, TEAM)["used"] == {"kubevisor.io/vcpus": "2"},
        what="used: b and c",
    )
