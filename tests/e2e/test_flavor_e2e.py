"""A VM from a flavor through the whole stack (issue 22, point 1): the controller records
the flavor, places the VM with the flavor's size, and the agent starts a domain with the
flavor's vCPUs and memory, read back from the live domain XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from stacks import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]


def test_a_vm_from_a_flavor_runs_with_the_flavors_size(stack: Stack, namespace: str) -> None:
    stack.apply(
        namespace,
        {
            "apiVersion": "kubevisor.io/v1alpha1",
            "kind": "VirtualMachineFlavor",
            "metadata": {"name": "small"},
            "spec": {"cpu": {"vcpus": 2}, "memory": {"size": "160Mi"}},
        },
        {
            "apiVersion": "kubevisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "flavored"},
            "spec": {"flavor": {"name": "small", "kind": "VirtualMachineFlavor"}},
        },
    )
    running = stack.wait_phase(namespace, "flavored", "Running", timeout=120)
    status = running["status"]
    assert (status["flavor"]["name"], status["placement"]["size"]["vcpus"]) == ("small", 2)
    live = ET.fromstring(stack.virsh(status["host"], "dumpxml", running["metadata"]["uid"]))
    vcpu, memory = live.find("vcpu"), live.find("memory")
    assert vcpu is not None and vcpu.text == "2"
    assert memory is not None and (memory.get("unit"), memory.text) == ("KiB", str(160 * 1024))
