"""Tuning knobs end to end: a VirtualMachine applied with kubectl, placed by the controller
on a host whose status offers what it needs, started by the agent, and its live domain XML
read back from libvirtd (`virsh dumpxml`), one assertion per knob.

The combination: a thin qcow2 disk with cache none + io native, a virtio NIC with
multiqueue on a tap device (a bridge made for the test: libvirt refuses multiqueue on
user-mode networking), a memory balloon with a stats period, and UEFI on Debian's OVMF
(256Mi: OVMF with direct kernel boot needs more than 128Mi). The hosts' status shows the
capabilities placement reads; a VM requiring what no host reports stays Unschedulable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import eventually, require
from kubevisor.core.domain.host import Ovmf
from kubevisor.testbed import guest as guest_image
from kubevisor.testbed.guest import Guest
from stacks import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]


@pytest.fixture(scope="module")
def bridge() -> Iterator[str]:
    """A Linux bridge for tap-backed NICs; libvirt creates and attaches the taps."""
    require(
        os.geteuid() == 0 and shutil.which("ip") is not None,
        what="a Linux bridge for the multiqueue NIC (root and iproute2)",
        how="run as root with iproute2 installed",
    )
    name = f"kve2e{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


@pytest.fixture
def offered_bridge(stack: Stack, bridge: str) -> Iterator[str]:
    """The bridge, offered to VMs by every host's admin (spec.hostNetworks): placement keeps
    a VM naming a host bridge off every host that does not offer it."""

    def offer(names: list[str] | None) -> None:
        for host in stack.hosts:
            patch = json.dumps({"spec": {"hostNetworks": names}})
            stack.kubectl("patch", "hvh", host.name, "--type=merge", "-p", patch)

    offer([bridge])
    try:
        yield bridge
    finally:
        offer(None)


def tuned(name: str, *, guest: Guest, bridge: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "cpu": {"vcpus": 2},
            "memory": {"size": "256Mi", "balloon": {"statsPeriodSeconds": 5}},
            "disks": [{"name": "data", "size": "64Mi", "cache": "none", "io": "native"}],
            "networks": [{"name": "fast", "type": "bridge", "source": bridge, "multiqueue": True}],
            "firmware": {"type": "uefi"},
            # The disk only has to attach; the guest boots its kernel directly.
            "boot": {
                "kernel": str(guest.kernel),
                "initrd": str(guest.initrd),
                "cmdline": guest.cmdline,
            },
        },
    }


def test_hosts_report_what_placement_reads(stack: Stack, ovmf: Ovmf) -> None:
    for host in stack.hosts:
        status = stack.get("hypervisorhost", host.name)["status"]
        capabilities = status["capabilities"]
        assert capabilities["uefi"] is True
        # The testbed's qemu.conf: security_driver = "none", cgroup_controllers = [].
        assert capabilities["securityDriver"] == "none"
        assert capabilities.get("cgroupControllers", []) == []
        # Not set there, so libvirt's default (on); read from the file (--qemu-conf).
        assert capabilities["seccompSandbox"] is True
        storage = status["storage"]
        assert {"capacity", "available", "provisioned", "used"} <= set(storage)


def test_a_bridge_no_host_offers_keeps_the_vm_unschedulable(
    stack: Stack, namespace: str, tiny_guest: Guest, bridge: str
) -> None:
    """Issue 16 class 5: naming a host bridge is not enough to join it."""
    stack.apply(namespace, tuned("unoffered", guest=tiny_guest, bridge=bridge))
    waiting = stack.wait_phase(namespace, "unoffered", "Unschedulable", timeout=60)
    scheduled = next(c for c in waiting["status"]["conditions"] if c["type"] == "Scheduled")
    assert f"{len(stack.hosts)} does not offer bridge {bridge} to VMs" in scheduled["message"]
    stack.kubectl("delete", "vm", "unoffered", "-n", namespace, "--wait=false")


def test_tuned_vm_reaches_the_live_domain_xml(
    stack: Stack, namespace: str, tiny_guest: Guest, offered_bridge: str, ovmf: Ovmf
) -> None:
    bridge = offered_bridge
    stack.apply(namespace, tuned("tuned", guest=tiny_guest, bridge=bridge))
    running = stack.wait_phase(namespace, "tuned", "Running", timeout=180)
    host, uid = running["status"]["host"], running["metadata"]["uid"]
    serial = stack.state_dirs[host] / "vms" / uid / "serial.log"
    eventually(
        lambda: serial.exists() and guest_image.MARKER in serial.read_text(errors="replace"),
        timeout=180,
        what="the UEFI guest's marker on its serial console",
    )
    live = ET.fromstring(stack.virsh(host, "dumpxml", uid))

    # Disk: O_DIRECT and Linux AIO on a thin qcow2 overlay.
    disk = live.find("devices/disk[@device='disk']")
    assert disk is not None
    driver = disk.find("driver")
    assert driver is not None
    assert (driver.get("type"), driver.get("cache"), driver.get("io")) == (
        "qcow2",
        "none",
        "native",
    )
    source = disk.find("source")
    assert source is not None and source.get("file", "").endswith("disk-data.qcow2")

    # Network: virtio on a tap in the bridge, one queue per vCPU.
    nic = live.find("devices/interface")
    assert nic is not None and nic.get("type") == "bridge"
    bridge_source = nic.find("source")
    assert bridge_source is not None and bridge_source.get("bridge") == bridge
    model = nic.find("model")
    assert model is not None and model.get("type") == "virtio"
    nic_driver = nic.find("driver")
    assert nic_driver is not None and nic_driver.get("queues") == "2"

    # Memory balloon reporting guest statistics every 5 s.
    balloon = live.find("devices/memballoon")
    assert balloon is not None and balloon.get("model") == "virtio"
    stats = balloon.find("stats")
    assert stats is not None and stats.get("period") == "5"

    # UEFI: OVMF code read-only, and a variable store of the VM's own.
    loader = live.find("os/loader")
    assert loader is not None
    assert (loader.text, loader.get("readonly"), loader.get("type")) == (
        ovmf.code,
        "yes",
        "pflash",
    )
    nvram = live.find("os/nvram")
    assert nvram is not None and nvram.text is not None
    assert Path(nvram.text).is_file() and uid in nvram.text


def vm_requiring(name: str, **security: bool) -> dict[str, Any]:
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"memory": {"size": "128Mi"}, "security": security},
    }


def test_vm_requiring_a_seccomp_sandbox_runs_where_hosts_report_one(
    stack: Stack, namespace: str
) -> None:
    stack.apply(namespace, vm_requiring("sandboxed", requireSeccompSandbox=True))
    stack.wait_phase(namespace, "sandboxed", "Running", timeout=120)


def test_vm_requiring_what_no_host_reports_stays_unschedulable(
    stack: Stack, namespace: str
) -> None:
    # The testbed's libvirt runs with security_driver = "none": nothing confines QEMU.
    stack.apply(namespace, vm_requiring("confined", requireConfinement=True))
    waiting = stack.wait_phase(namespace, "confined", "Unschedulable", timeout=60)
    scheduled = next(c for c in waiting["status"]["conditions"] if c["type"] == "Scheduled")
    assert scheduled["status"] == "False"
    assert f"{len(stack.hosts)} lacks confinement" in scheduled["message"], scheduled["message"]


def vm_with_cpu_model(name: str, model: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"cpu": {"vcpus": 1, "model": model}, "memory": {"size": "128Mi"}},
    }


def test_named_cpu_model_runs_only_where_libvirt_marks_it_usable(
    stack: Stack, namespace: str
) -> None:
    usable = [
        set(stack.get("hypervisorhost", host.name)["status"]["cpu"]["usableModels"])
        for host in stack.hosts
    ]
    # TCG (domain type qemu) emulates the generic models on any host CPU.
    assert all("Nehalem" in models for models in usable), usable
    stack.apply(namespace, vm_with_cpu_model("nehalem", "Nehalem"))
    running = stack.wait_phase(namespace, "nehalem", "Running", timeout=120)
    live = ET.fromstring(
        stack.virsh(running["status"]["host"], "dumpxml", running["metadata"]["uid"])
    )
    cpu = live.find("cpu")
    assert cpu is not None and cpu.get("mode") == "custom"
    assert cpu.findtext("model") == "Nehalem"

    # A model libvirt knows but marks usable='no' here (TCG lacks features it needs).
    unusable = next(
        m
        for m in ("Skylake-Client", "Icelake-Server", "EPYC-Rome")
        if not any(m in models for models in usable)
    )
    stack.apply(namespace, vm_with_cpu_model("newer", unusable))
    waiting = stack.wait_phase(namespace, "newer", "Unschedulable", timeout=60)
    scheduled = next(c for c in waiting["status"]["conditions"] if c["type"] == "Scheduled")
    assert scheduled["status"] == "False"
    assert f"{len(stack.hosts)} cannot run CPU model {unusable}" in scheduled["message"], scheduled[
        "message"
    ]
