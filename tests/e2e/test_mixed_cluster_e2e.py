"""A mixed cluster (issue #9's "Done when"): the shared stack's two QEMU hosts, one libvirt
LXC host and one vcsim-backed vSphere host, each with its own agent, under one controller.

VMs requiring each hypervisor type (`spec.hypervisor.type`) land on a host of that type
and run there; a live migration of the system container is refused with the reason; a VM
that requires no type but asks for UEFI, which neither LXC nor vSphere offer
(`core.hypervisors`), lands on a QEMU host.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import builders
from harness import eventually, require
from kubevisor.core.domain.host import Ovmf
from kubevisor.testbed import container, guest, hosts
from kubevisor.testbed.vcsim import Vcsim
from stacks import ExtraHost, Stack, VsphereHost

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd, pytest.mark.vcsim]

# Under load several VMs start at once; generous, but bounded.
RUNNING_TIMEOUT = 180


@dataclass
class Mixed:
    """The two hosts added to the shared stack, by hypervisor type."""

    lxc: ExtraHost
    vmware: VsphereHost

    def container_state(self, uid: str) -> str:
        """`virsh domstate` of a container on the LXC host."""
        assert self.lxc.host is not None
        done = subprocess.run(
            ["virsh", "-c", self.lxc.host.lxc_uri, "domstate", uid],
            capture_output=True,
            text=True,
        )
        return done.stdout.strip() if done.returncode == 0 else done.stderr.strip()


@pytest.fixture(scope="module")
def mixed(
    stack: Stack, vcsim_server: Vcsim, tmp_path_factory: pytest.TempPathFactory, rootfs_dir: Path
) -> Iterator[Mixed]:
    """An LXC host and a vSphere host, Ready, for this module; removed afterwards, so no
    later test's VM is placed on them."""
    missing = hosts.missing_lxc_prerequisites()
    require(
        not missing,
        what=f"libvirt's LXC driver (missing {missing})",
        how=hosts.LXC_HOW_TO_INSTALL,
    )
    require(guest.BUSYBOX.is_file(), what="a static busybox", how=guest.HOW_TO_INSTALL)
    root = tmp_path_factory.mktemp("mixed")
    lxc = ExtraHost(stack, root / "lxc", lxc=True, rootfs_dir=rootfs_dir)
    vmware = VsphereHost(stack, vcsim_server, "mixed-vsphere", "DC0_C0_H0", root / "vsphere")
    try:
        vmware.start()
        lxc.start()
        eventually(vmware.ready, timeout=90, what=f"{vmware.name} Ready")
        yield Mixed(lxc=lxc, vmware=vmware)
    finally:
        vmware.remove()
        lxc.remove()


@pytest.fixture
def mixed_namespace(mixed: Mixed, namespace: str) -> str:
    """`namespace`, set up after the hosts: its VMs are deleted while their agents run."""
    return namespace


def vm(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return builders.vm(name, **{"cpu": {"vcpus": 1}, **spec})


def host_type(stack: Stack, host: str) -> str:
    return str(stack.get("hvh", host)["status"]["hypervisor"]["type"])


def scheduled_event(stack: Stack, namespace: str, name: str) -> str:
    """The message of the VM's Scheduled event (the controller sends one per placement)."""
    items = json.loads(
        stack.kubectl(
            "get", "events", "-n", namespace, "--field-selector", "reason=Scheduled", "-o", "json"
        ).stdout
    )["items"]
    messages = [e["message"] for e in items if e["involvedObject"]["name"] == name]
    assert len(messages) == 1, f"{name}: Scheduled events {messages}"
    return str(messages[0])


def assert_placed(stack: Stack, namespace: str, running: dict[str, Any]) -> str:
    """The host of a Running VM, after checking its Scheduled condition and event name it."""
    name, host = running["metadata"]["name"], running["status"]["host"]
    (scheduled,) = [c for c in running["status"]["conditions"] if c["type"] == "Scheduled"]
    assert scheduled["status"] == "True", scheduled
    assert f"placed on host {host}" in scheduled["message"], scheduled
    assert f"placed on host {host}" in scheduled_event(stack, namespace, name)
    assert running["metadata"]["labels"]["kubevisor.io/host"] == host
    return str(host)


def test_each_type_runs_on_its_host_and_lxc_refuses_live_migration(
    stack: Stack, mixed: Mixed, vcsim_server: Vcsim, mixed_namespace: str, tmp_path: Path
) -> None:
    namespace = mixed_namespace
    assert mixed.lxc.rootfs_dir is not None
    rootfs = container.build_rootfs(mixed.lxc.rootfs_dir / "on-lxc")
    stack.apply(
        namespace,
        vm("on-qemu", {"memory": {"size": "128Mi"}, "hypervisor": {"type": "qemu"}}),
        vm(
            "on-lxc",
            {
                "memory": {"size": "48Mi"},
                "hypervisor": {"type": "lxc"},
                "container": {"rootfs": str(rootfs), "init": container.HEARTBEAT_INIT},
            },
        ),
        vm("on-vmware", {"memory": {"size": "128Mi"}, "hypervisor": {"type": "vmware"}}),
    )
    placed = {}
    for name in ("on-qemu", "on-lxc", "on-vmware"):
        running = stack.wait_phase(namespace, name, "Running", timeout=RUNNING_TIMEOUT)
        placed[name] = (assert_placed(stack, namespace, running), running["metadata"]["uid"])

    qemu_host, qemu_uid = placed["on-qemu"]
    assert qemu_host in {h.name for h in stack.hosts}
    assert host_type(stack, qemu_host) == "qemu"
    assert qemu_uid in stack.domains(qemu_host)

    lxc_host, lxc_uid = placed["on-lxc"]
    assert lxc_host == mixed.lxc.name
    assert host_type(stack, lxc_host) == "lxc"
    assert mixed.container_state(lxc_uid) == "running"
    eventually(lambda: container.beats(rootfs) > 1, what="the container's init counting")

    vmware_host, vmware_uid = placed["on-vmware"]
    assert vmware_host == mixed.vmware.name
    assert host_type(stack, vmware_host) == "vmware"
    seen = vcsim_server.vm(vmware_uid)
    assert seen is not None and (seen.host, seen.power_state) == (mixed.vmware.esxi, "poweredOn")

    stack.start_migration(namespace, "move-container", "on-lxc")
    job = stack.wait_migration(namespace, "move-container", timeout=60)
    assert job["status"]["phase"] == "Failed", job["status"]
    assert "lxc hosts cannot live-migrate" in job["status"]["reason"], job["status"]
    after = stack.get("vm", "on-lxc", namespace)["status"]
    assert (after["phase"], after["host"]) == ("Running", lxc_host), "the container stayed"
    beats = container.beats(rootfs)
    eventually(lambda: container.beats(rootfs) > beats, what="the container still counting")


def test_a_vm_asking_for_uefi_without_a_type_lands_on_qemu(
    stack: Stack, mixed: Mixed, ovmf: Ovmf, mixed_namespace: str
) -> None:
    """No type required, but UEFI: the capability filter turns down the lxc and vmware
    hosts, and says so for a VM that requires either type."""
    namespace = mixed_namespace
    # OVMF with the guest's direct kernel boot needs 256Mi (DEVELOPERS.md).
    uefi = {"memory": {"size": "256Mi"}, "firmware": {"type": "uefi"}}
    stack.apply(
        namespace,
        vm("firmware", uefi),
        vm("firmware-vmware", {**uefi, "hypervisor": {"type": "vmware"}}),
        vm("firmware-lxc", {**uefi, "hypervisor": {"type": "lxc"}}),
    )
    running = stack.wait_phase(namespace, "firmware", "Running", timeout=RUNNING_TIMEOUT)
    host = assert_placed(stack, namespace, running)
    assert host in {h.name for h in stack.hosts}, f"{host} is not one of the QEMU hosts"
    assert host_type(stack, host) == "qemu"
    assert running["metadata"]["uid"] in stack.domains(host)

    for name, kind in (("firmware-vmware", "vmware"), ("firmware-lxc", "lxc")):
        waiting = stack.wait_phase(namespace, name, "Unschedulable")
        (scheduled,) = [c for c in waiting["status"]["conditions"] if c["type"] == "Scheduled"]
        assert scheduled["status"] == "False", scheduled
        assert f"{kind} has no UEFI firmware (spec.firmware)" in scheduled["message"], scheduled
