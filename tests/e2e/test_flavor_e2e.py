"""A VM from a flavor through the whole stack (issue 22): the controller records the
flavor, places the VM with the flavor's size, and the agent starts a domain with the
flavor's vCPUs and memory, read back from the live domain XML; `kubevisor resize --flavor
--restart` gives it another flavor's size on its host."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import Any

import pytest

import builders
from harness import eventually
from stacks import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]


def flavor(name: str, vcpus: int, memory: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachineFlavor",
        "metadata": {"name": name},
        "spec": {"cpu": {"vcpus": vcpus}, "memory": {"size": memory}},
    }


def vm(name: str, flavor: str) -> dict[str, Any]:
    return builders.vm(name, flavor={"name": flavor, "kind": "VirtualMachineFlavor"})


def live_size(stack: Stack, running: dict[str, Any]) -> tuple[str | None, str | None]:
    """(vCPUs, memory in KiB) of the VM's live domain."""
    xml = stack.virsh(running["status"]["host"], "dumpxml", running["metadata"]["uid"])
    live = ET.fromstring(xml)
    vcpu, memory = live.find("vcpu"), live.find("memory")
    assert vcpu is not None and memory is not None and memory.get("unit") == "KiB"
    return vcpu.text, memory.text


def test_a_vm_from_a_flavor_runs_with_its_size_and_resizes_to_another(
    stack: Stack, namespace: str
) -> None:
    """One test for both (each e2e namespace costs its VMs' deletion at the end)."""
    stack.apply(namespace, flavor("one", 1, "160Mi"), flavor("two", 2, "192Mi"), vm("grows", "one"))
    before = stack.wait_phase(namespace, "grows", "Running", timeout=120)
    status = before["status"]
    assert (status["flavor"]["name"], status["placement"]["size"]["vcpus"]) == ("one", 1)
    assert live_size(stack, before) == ("1", str(160 * 1024))
    done = subprocess.run(
        [
            sys.executable, "-m", "kubevisor.cli.main", "resize", "grows", "--flavor", "two",
            "--namespaced", "--restart", "--timeout", "120s", "-n", namespace,
            "--kubeconfig", str(stack.plane.kubeconfig),
        ],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].endswith(
        "resized (flavor one -> two; the new size applies at its next start)"
    )

    def resized() -> dict[str, Any] | None:
        got = stack.get("vm", "grows", namespace)
        size = (got["status"].get("placement") or {}).get("size") or {}
        return got if got["status"].get("phase") == "Running" and size.get("vcpus") == 2 else None

    after = eventually(resized, timeout=120, what="grows running with flavor two's size")
    assert after["status"]["host"] == before["status"]["host"]
    assert after["status"]["flavor"]["name"] == "two"
    assert live_size(stack, after) == ("2", str(192 * 1024))
