"""vSphere hosts in the real stack: two ESXi hosts of one vcsim, each managed by its own
agent (`--libvirt-uri vsphere://...`), next to the shared QEMU hosts. The controller places
a VM requiring type vmware on them and moves it between them with a MigrationJob (a
vMotion)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import builders
from harness import eventually
from kubevisor.testbed.vcsim import Vcsim
from stacks import Stack, VsphereHost

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.vcsim]

# HypervisorHost name -> the ESXi host of vcsim's default cluster it manages.
ESXI = {"vsphere-h0": "DC0_C0_H0", "vsphere-h1": "DC0_C0_H1"}


@pytest.fixture(scope="module")
def vsphere_hosts(
    stack: Stack, vcsim_server: Vcsim, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    """The two vSphere HypervisorHosts, Ready; deleted afterwards, so no later test's VM
    is placed on them."""
    root = tmp_path_factory.mktemp("vsphere-hosts")
    hosts = [
        VsphereHost(stack, vcsim_server, name, esxi, root / name) for name, esxi in ESXI.items()
    ]
    try:
        for host in hosts:
            host.start()
        for host in hosts:
            eventually(host.ready, timeout=60, what=f"{host.name} Ready")
        yield list(ESXI)
    finally:
        for host in hosts:
            host.remove()


@pytest.fixture
def vsphere_namespace(vsphere_hosts: list[str], namespace: str) -> str:
    """`namespace`, set up after the hosts: its VMs are deleted while their agents run."""
    return namespace


def vm(name: str) -> dict[str, Any]:
    return builders.tiny_vm(name, cpu={"vcpus": 1}, hypervisor={"type": "vmware"})


def test_a_vm_runs_on_vsphere_and_vmotions_to_the_other_host(
    stack: Stack, vcsim_server: Vcsim, vsphere_namespace: str
) -> None:
    namespace = vsphere_namespace
    stack.apply(namespace, vm("esx"))
    running = stack.wait_phase(namespace, "esx", "Running")
    uid, source = running["metadata"]["uid"], running["status"]["host"]
    assert source in ESXI
    host_status = stack.get("hvh", source)["status"]
    assert host_status["hypervisor"]["type"] == "vmware"
    seen = vcsim_server.vm(uid)
    assert seen is not None and (seen.host, seen.power_state) == (ESXI[source], "poweredOn")

    target = next(name for name in ESXI if name != source)
    stack.start_migration(namespace, "vmotion", "esx")
    done = stack.wait_migration(namespace, "vmotion")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert (done["status"]["source"], done["status"]["target"]) == (source, target)
    moved = eventually(
        lambda: (
            v
            if (v := stack.get("vm", "esx", namespace))["status"].get("phase") == "Running"
            and v["status"].get("host") == target
            else None
        ),
        timeout=60,
        what="the VM Running on the target",
    )
    assert moved["status"]["domain"]["uuid"] == uid
    seen = vcsim_server.vm(uid)
    assert seen is not None and (seen.host, seen.power_state) == (ESXI[target], "poweredOn")
