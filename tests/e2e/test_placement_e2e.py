"""Placement through the whole stack: bursts, capacity, pinning, guest NUMA cells on two
host cells, a controller crash."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builders import tiny_vm as vm
from harness import eventually
from kubevisor.api import cpuset
from kubevisor.testbed.hosts import LocalHost
from stacks import ExtraHost, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]


def patch_host(stack: Stack, host: str, spec: dict[str, Any]) -> None:
    stack.kubectl("patch", "hvh", host, "--type=merge", "-p", json.dumps({"spec": spec}))


@pytest.fixture
def host_specs(stack: Stack) -> Iterator[None]:
    """Hosts whose spec a test changes get their original spec back afterwards."""
    saved = {h.name: stack.get("hvh", h.name)["spec"] for h in stack.hosts}
    try:
        yield
    finally:
        for name, spec in saved.items():
            stack.kubectl(
                "patch",
                "hvh",
                name,
                "--type=merge",
                "-p",
                json.dumps(
                    {
                        "spec": {
                            "allocationRatios": None,
                            "cpuDedicatedSet": None,
                            "cpuSharedSet": None,
                            **spec,
                        }
                    }
                ),
            )


def allocatable_cpu(stack: Stack, host: str) -> int:
    return int(stack.get("hvh", host)["status"]["allocatable"]["cpu"])


def phases(stack: Stack, namespace: str) -> Counter[str]:
    return Counter((v.get("status") or {}).get("phase") for v in stack.vms(namespace))


def running_per_host(stack: Stack, namespace: str) -> Counter[str]:
    return Counter(
        v["status"]["host"]
        for v in stack.vms(namespace)
        if (v.get("status") or {}).get("phase") == "Running"
    )


def test_twenty_vms_where_fifteen_fit(stack: Stack, namespace: str, host_specs: None) -> None:
    first, second = (h.name for h in stack.hosts)
    cpus = {h: allocatable_cpu(stack, h) // 4 for h in (first, second)}  # default ratio 4.0
    # Ratios chosen so the two hosts hold exactly 15 one-vCPU VMs between them.
    patch_host(stack, first, {"allocationRatios": {"cpu": 8 / cpus[first]}})
    patch_host(stack, second, {"allocationRatios": {"cpu": 7 / cpus[second]}})
    eventually(
        lambda: allocatable_cpu(stack, first) == 8 and allocatable_cpu(stack, second) == 7,
        what="the new ratios in the hosts' allocatable",
    )
    stack.apply(namespace, *(vm(f"burst-{i:02d}") for i in range(20)))
    eventually(
        lambda: phases(stack, namespace) == Counter(Running=15, Unschedulable=5),
        timeout=240,
        what=f"15 Running and 5 Unschedulable (have {phases(stack, namespace)})",
    )
    per_host = running_per_host(stack, namespace)
    assert per_host[first] <= 8 and per_host[second] <= 7, per_host
    for name in (first, second):
        assert len(stack.domains(name)) == per_host[name]

    running = sorted(
        v["metadata"]["name"] for v in stack.vms(namespace) if v["status"]["phase"] == "Running"
    )[:5]
    stack.kubectl("delete", "vm", *running, "-n", namespace, "--wait=false")
    eventually(
        lambda: phases(stack, namespace) == Counter(Running=15),
        timeout=240,
        what=f"the 5 waiting VMs to start (have {phases(stack, namespace)})",
    )
    per_host = running_per_host(stack, namespace)
    assert per_host[first] <= 8 and per_host[second] <= 7, per_host


def test_controller_killed_mid_burst_converges_without_doubles(
    stack: Stack, namespace: str
) -> None:
    stack.apply(namespace, *(vm(f"crash-{i}") for i in range(8)))
    eventually(
        lambda: sum(1 for v in stack.vms(namespace) if (v.get("status") or {}).get("host")) >= 2,
        timeout=60,
        what="the first bindings",
    )
    stack.controller.kill()
    stack.controller.start()
    eventually(
        lambda: phases(stack, namespace) == Counter(Running=8),
        timeout=180,
        what=f"all 8 Running after the restart (have {phases(stack, namespace)})",
    )
    domains = Counter(uid for h in stack.hosts for uid in stack.domains(h.name))
    for v in stack.vms(namespace):
        uid = v["metadata"]["uid"]
        assert domains[uid] == 1, f"{v['metadata']['name']} has {domains[uid]} domains"
        assert uid in stack.domains(v["status"]["host"])
    events = json.loads(
        stack.kubectl(
            "get", "events", "-n", namespace, "--field-selector", "reason=Scheduled", "-o", "json"
        ).stdout
    )["items"]
    placed = Counter(e["involvedObject"]["name"] for e in events)
    assert all(count == 1 for count in placed.values()), placed


def test_dedicated_vcpus_are_pinned_as_placement_says(
    stack: Stack, namespace: str, host_specs: None
) -> None:
    host = stack.hosts[0].name
    other = stack.hosts[1].name
    patch_host(stack, host, {"cpuDedicatedSet": "1", "cpuSharedSet": "0"})
    eventually(
        lambda: stack.get("hvh", host)["status"]["allocatable"]["cpu"] == 5,
        what="1 dedicated + 4 shared allocatable CPUs",
    )
    dedicated = {"vcpus": 1, "policy": "dedicated"}
    stack.apply(namespace, vm("pinned-0", cpu=dedicated))
    placed = stack.wait_phase(namespace, "pinned-0", "Running")
    assert placed["status"]["host"] == host
    pins = [p for c in placed["status"]["placement"]["cells"] for p in c["vcpuPins"]]
    assert pins == [{"vcpu": 0, "pcpu": 1}]
    live = ET.fromstring(stack.virsh(host, "dumpxml", placed["metadata"]["uid"]))
    assert [(p.get("vcpu"), p.get("cpuset")) for p in live.findall("cputune/vcpupin")] == [
        ("0", "1")
    ]
    host_cell = placed["status"]["placement"]["cells"][0]["hostCell"]
    assert live.find("numatune/memory").get("nodeset") == str(host_cell)

    # The only dedicated pCPU is taken: a second pinned VM must wait, not share it.
    stack.apply(namespace, vm("pinned-1", cpu=dedicated))
    waiting = stack.wait_phase(namespace, "pinned-1", "Unschedulable")
    scheduled = next(c for c in waiting["status"]["conditions"] if c["type"] == "Scheduled")
    assert "dedicated" in scheduled["message"], scheduled["message"]
    assert other not in {v["status"].get("host") for v in stack.vms(namespace)}


def affinity(virsh_output: str) -> dict[str, frozenset[int]]:
    """`virsh vcpupin` / `virsh emulatorpin` rows: vCPU (or "*") -> its CPUs."""
    rows = [line.split() for line in virsh_output.splitlines()[2:] if line.strip()]
    return {key.rstrip(":"): cpuset.parse(cpus) for key, cpus in rows}


def qemu_threads(uid: str) -> dict[str, frozenset[int]]:
    """Every thread of the QEMU process running domain `uid` ("TID name") with the CPUs the
    kernel lets it run on: what the guest really gets, whatever libvirt's XML says."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-uuid" not in argv or uid.encode() not in argv:
            continue
        threads = {}
        for task in (proc / "task").iterdir():
            fields = dict(
                line.split(":\t", 1) for line in (task / "status").read_text().splitlines()
            )
            threads[f"{task.name} {fields['Name']}"] = cpuset.parse(fields["Cpus_allowed_list"])
        return threads
    raise AssertionError(f"no QEMU process runs domain {uid}")


def test_a_shared_vm_runs_on_the_shared_set_beside_a_pinned_one(
    stack: Stack, namespace: str, host_specs: None
) -> None:
    """Issue 15: a shared VM without NUMA cells floated over every host CPU, the ones pinned
    to dedicated VMs too. With CPU 1 dedicated and CPU 0 shared, a pinned VM and a shared
    one on the same host: no thread of either QEMU may run on the other's CPU."""
    host = stack.hosts[0].name
    patch_host(stack, host, {"cpuDedicatedSet": "1", "cpuSharedSet": "0"})
    eventually(
        lambda: stack.get("hvh", host)["status"]["allocatable"]["cpu"] == 5,
        what="1 dedicated + 4 shared allocatable CPUs",
    )
    together = {"group": "neighbours", "policy": "affinity"}
    stack.apply(
        namespace, vm("pinned", cpu={"vcpus": 1, "policy": "dedicated"}, placement=together)
    )
    pinned = stack.wait_phase(namespace, "pinned", "Running")
    # One vCPU: no VM gets more vCPUs than the host has shared CPUs, whatever the ratio.
    stack.apply(namespace, vm("floating", cpu={"vcpus": 1}, placement=together))
    floating = stack.wait_phase(namespace, "floating", "Running")
    assert pinned["status"]["host"] == floating["status"]["host"] == host
    assert not (floating["status"].get("placement") or {}).get("cells"), "no NUMA placement"

    pinned_uid, floating_uid = pinned["metadata"]["uid"], floating["metadata"]["uid"]
    live = ET.fromstring(stack.virsh(host, "dumpxml", floating_uid))
    vcpu, emulator = live.find("vcpu"), live.find("cputune/emulatorpin")
    assert vcpu is not None and vcpu.get("cpuset") == "0"
    assert emulator is not None and emulator.get("cpuset") == "0"
    # libvirt's view of the running domains, then the kernel's.
    assert affinity(stack.virsh(host, "vcpupin", floating_uid)) == {"0": {0}}
    assert affinity(stack.virsh(host, "emulatorpin", floating_uid)) == {"*": {0}}
    assert affinity(stack.virsh(host, "vcpupin", pinned_uid)) == {"0": {1}}
    assert affinity(stack.virsh(host, "emulatorpin", pinned_uid)) == {"*": {1}}
    for uid, cpus in ((floating_uid, {0}), (pinned_uid, {1})):
        threads = qemu_threads(uid)
        assert threads and all(allowed == cpus for allowed in threads.values()), threads


@pytest.fixture
def two_cell_host(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHost]:
    """A third host whose libvirt sees this machine as two NUMA cells (cpu0 in cell 0, cpu1
    in cell 1: `kubevisor.testbed.numa`). It lives for one test, so the shared hosts keep
    their single cell and the tests that count the cluster's capacity never see it. Ask for
    it before `namespace`, so the namespace's VMs are deleted while its agent still runs.
    """
    extra = ExtraHost(stack, tmp_path_factory.mktemp("two-cell-host"), numa_cells=2)
    try:
        extra.start()
        assert extra.host is not None
        yield extra.host
    finally:
        extra.remove()


def virsh(host: LocalHost, *args: str) -> str:
    done = subprocess.run(["virsh", "-c", host.uri, *args], capture_output=True, text=True)
    assert done.returncode == 0, f"virsh {' '.join(args)} on {host.name}: {done.stderr}"
    return done.stdout.strip()


def placed_pins(vm: dict[str, Any]) -> list[tuple[int, int]]:
    """(vcpu, pcpu) pairs of a VM's status.placement, sorted."""
    cells = ((vm.get("status") or {}).get("placement") or {}).get("cells") or []
    return sorted((p["vcpu"], p["pcpu"]) for c in cells for p in c.get("vcpuPins") or [])


def live_pins(host: LocalHost, uid: str) -> list[tuple[int, int]]:
    """(vcpu, pcpu) pairs as the running QEMU's threads are pinned (`virsh vcpupin`)."""
    rows = [line.split() for line in virsh(host, "vcpupin", uid).splitlines()[2:]]
    return sorted((int(vcpu.rstrip(":")), int(cpus)) for vcpu, cpus in rows)


def test_two_guest_numa_cells_land_on_two_host_cells_as_placement_says(
    stack: Stack, two_cell_host: LocalHost, namespace: str
) -> None:
    host = two_cell_host.name
    reported = stack.get("hvh", host)["status"]["numaCells"]
    assert [(c["id"], c["cpus"]) for c in reported] == [(0, [0]), (1, [1])]
    patch_host(stack, host, {"cpuDedicatedSet": "0-1"})
    cells = [{"cpus": [0], "memory": "128Mi"}, {"cpus": [1], "memory": "128Mi"}]
    two_cells = vm(
        "numa-0",
        cpu={"vcpus": 2, "policy": "dedicated"},
        memory={"size": "256Mi"},
        numa={"cells": cells},
    )
    stack.apply(namespace, two_cells)
    placed = stack.wait_phase(namespace, "numa-0", "Running", timeout=120)
    assert placed["status"]["host"] == host
    placement = placed["status"]["placement"]["cells"]
    assert sorted(c["hostCell"] for c in placement) == [0, 1], "one host cell per guest cell"
    uid = placed["metadata"]["uid"]

    # The domain says what placement says, and QEMU's vCPU threads are pinned so.
    live = ET.fromstring(virsh(two_cell_host, "dumpxml", uid))
    xml_pins = sorted(
        (int(p.get("vcpu", "")), int(p.get("cpuset", ""))) for p in live.iter("vcpupin")
    )
    assert xml_pins == placed_pins(placed) == live_pins(two_cell_host, uid)
    memnodes = {m.get("cellid"): m.get("nodeset") for m in live.findall("numatune/memnode")}
    assert memnodes == {str(c["guestCell"]): str(c["hostCell"]) for c in placement}
    memory = live.find("numatune/memory")
    assert memory is not None and memory.get("nodeset") == "0-1"
    guest_cells = [c.get("cpus") for c in live.findall("cpu/numa/cell")]
    assert guest_cells == ["0", "1"]

    # Both dedicated pCPUs are taken: another pinned VM must wait, not share one.
    stack.apply(namespace, vm("numa-1", cpu={"vcpus": 1, "policy": "dedicated"}))
    waiting = stack.wait_phase(namespace, "numa-1", "Unschedulable")
    scheduled = next(c for c in waiting["status"]["conditions"] if c["type"] == "Scheduled")
    assert "dedicated" in scheduled["message"], scheduled["message"]
    on_host = [v for v in stack.vms(namespace) if (v.get("status") or {}).get("host") == host]
    used = Counter(pcpu for v in on_host for _, pcpu in placed_pins(v))
    assert used and max(used.values()) == 1, used
    live_used = Counter(
        pcpu
        for uid in virsh(two_cell_host, "list", "--uuid").split()
        for _, pcpu in live_pins(two_cell_host, uid)
    )
    assert live_used == used
