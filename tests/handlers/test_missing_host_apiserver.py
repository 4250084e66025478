"""The controller process on a real kube-apiserver: a VM whose status names a host that
has no HypervisorHost goes Unknown saying so, then fails over after the grace.

The control plane is this module's own: the session's may have the e2e stack's
controller running on it, and two controllers would both act on the VM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import ManagedProcess, eventually
from kubevisor.testbed.controlplane import ControlPlane

from .apiserver import (
    NAMESPACE,
    apply,
    controller_process,
    get,
    patch_status,
    ready_host,
)

pytestmark = pytest.mark.apiserver

GRACE = 20
"""Seconds the VM stays Unknown on its missing host before it fails over."""


@pytest.fixture
def controller(plane: ControlPlane, tmp_path: Path) -> Iterator[ManagedProcess]:
    with controller_process(plane, tmp_path, "--failover-grace", str(GRACE)) as process:
        yield process


def test_a_vm_bound_to_a_host_that_does_not_exist_is_unknown_then_fails_over(
    plane: ControlPlane, controller: ManagedProcess
) -> None:
    # One real host, heartbeating (a Lease good for an hour), with room for the VM.
    ready_host(plane, "h2", cpus=4, memory="4Gi")
    # A VM whose status was edited by hand to name host h9, which never existed.
    apply(
        plane,
        {
            "apiVersion": "kubevisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "a", "namespace": NAMESPACE},
            "spec": {"runStrategy": "Always", "memory": {"size": "64Mi"}},
        },
    )
    vm = ("vm", "a", "-n", NAMESPACE)
    patch_status(plane, *vm, status={"host": "h9", "phase": "Running", "created": True})

    controller.start()

    def ready() -> tuple[str, str, str] | None:
        status = get(plane, *vm).get("status") or {}
        found = [c for c in status.get("conditions") or [] if c["type"] == "Ready"]
        if status.get("phase") != "Unknown" or not found:
            return None
        return found[0]["status"], found[0]["reason"], found[0]["message"]

    # Up to a minute for the controller to start; then Unknown for GRACE seconds.
    assert eventually(ready, timeout=60, what="the VM Unknown on its missing host") == (
        "Unknown",
        "HostNotFound",
        "host h9 is not Ready: HypervisorHost h9 does not exist",
    )
    assert get(plane, *vm)["status"]["host"] == "h9"

    def moved() -> dict[str, Any] | None:
        status = get(plane, *vm).get("status") or {}
        return status if status.get("host") == "h2" else None

    status = eventually(moved, timeout=GRACE + 60, what="the VM placed on h2")
    assert status["phase"] == "Scheduled"
    assert get(plane, *vm)["metadata"]["labels"]["kubevisor.io/host"] == "h2"

    def events() -> dict[str, tuple[str, str]] | None:
        listed = get(plane, "events", "-n", NAMESPACE)["items"]
        said = {
            e["reason"]: (e["type"], e["message"])
            for e in listed
            if e["involvedObject"]["name"] == "a"
        }
        return said if "FailingOver" in said else None

    said = eventually(events, timeout=30, what="the failover events")
    assert said["Rescheduling"][1].startswith(
        "host h9 has had no HypervisorHost and no heartbeat for "
    )
    assert said["FailingOver"] == (
        "Warning",
        "host h9 was lost: restarts on h2 from its image: the changes to its local disks "
        "on h9 are lost",
    )
