"""Namespace quotas through the whole stack (README, Teams and quotas): a namespace with
`kubevisor.io/vcpus: 2` runs two 1-vCPU VMs, the third waits QuotaExceeded with the
figures; a live migration in that full namespace succeeds and counts once; deleting a
VM starts the third by itself."""

from __future__ import annotations

from typing import Any

import pytest

import builders
from harness import eventually
from stacks import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]

FULL = "exceeds quota compute: kubevisor.io/vcpus requested 1, used 2, hard 2"


def vm(name: str) -> dict[str, Any]:
    return builders.tiny_vm(name, cpu={"vcpus": 1})


def used(stack: Stack, namespace: str) -> dict[str, str]:
    quota = stack.get("resourcequota", "compute", namespace)
    return dict(((quota or {}).get("status") or {}).get("used") or {})


def scheduled(stack: Stack, namespace: str, name: str) -> dict[str, Any] | None:
    obj = stack.get("vm", name, namespace) or {}
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Scheduled"), None)


def test_a_2_vcpu_namespace_runs_two_vms_migrates_one_and_starts_the_third_when_one_goes(
    stack: Stack, namespace: str
) -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "compute"},
        "spec": {"hard": {"kubevisor.io/vcpus": "2"}},
    }
    stack.apply(namespace, quota, vm("web-1"), vm("web-2"))
    first = stack.wait_phase(namespace, "web-1", "Running")
    stack.wait_phase(namespace, "web-2", "Running")
    stack.apply(namespace, vm("web-3"))
    waiting = eventually(
        lambda: c if (c := scheduled(stack, namespace, "web-3")) else None,
        timeout=30,
        what="web-3's Scheduled condition",
    )
    assert (waiting["status"], waiting["reason"], waiting["message"]) == (
        "False",
        "QuotaExceeded",
        FULL,
    )
    assert stack.phase(namespace, "web-3") == "Pending"
    assert used(stack, namespace) == {"kubevisor.io/vcpus": "2"}

    source = first["status"]["host"]
    target = next(h.name for h in stack.hosts if h.name != source)
    stack.start_migration(namespace, "move", "web-1")
    done = stack.wait_migration(namespace, "move")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["target"] == target
    assert used(stack, namespace) == {"kubevisor.io/vcpus": "2"}, "a migration counts once"
    assert stack.phase(namespace, "web-3") == "Pending"

    stack.kubectl("delete", "vm", "web-2", "-n", namespace, "--wait=false")
    stack.wait_phase(namespace, "web-3", "Running", timeout=120)
    assert used(stack, namespace) == {"kubevisor.io/vcpus": "2"}
