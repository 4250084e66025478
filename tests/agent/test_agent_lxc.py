"""The agent against the real control plane and a real libvirtd host running LXC: a VM
with spec.container runs as a system container through the agent's usual code paths.

The test binds VMs to the host itself, as test_agent.py does, and looks at the container
through the files its init writes (kubevisor.testbed.container).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import eventually, require
from kubevisor.testbed import container, guest, hosts
from kubevisor.testbed.commands import AgentOptions
from kubevisor.testbed.controlplane import ControlPlane

pytestmark = [pytest.mark.apiserver, pytest.mark.libvirtd]

NAMESPACE = "agent-lxc-test"
HOST = "agent-lxc-host"


@dataclass
class LxcAgent:
    host: hosts.LocalHost
    state_dir: Path
    rootfs_dir: Path
    """The agent's --rootfs-dir."""
    process: subprocess.Popen[bytes]

    def domstate(self, uid: str) -> str | None:
        done = subprocess.run(
            ["virsh", "-c", self.host.lxc_uri, "domstate", uid], capture_output=True, text=True
        )
        return done.stdout.strip() if done.returncode == 0 else None


@pytest.fixture(scope="module")
def agent(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory, rootfs_dir: Path
) -> Iterator[LxcAgent]:
    missing = hosts.missing_prerequisites() + hosts.missing_lxc_prerequisites()
    require(
        not missing,
        what=f"a local libvirtd host with the LXC driver (missing {missing})",
        how=f"{hosts.HOW_TO_INSTALL}; {hosts.LXC_HOW_TO_INSTALL}",
    )
    require(guest.BUSYBOX.is_file(), what="a static busybox", how=guest.HOW_TO_INSTALL)
    for namespace in ("kubevisor-system", NAMESPACE):
        control_plane.kubectl("create", "namespace", namespace, check=False)
    state = tmp_path_factory.mktemp("agent-lxc")
    [host] = hosts.start_hosts(1, state_dir=state / "hosts", lxc=True)
    log = state / "agent.log"
    argv = AgentOptions(
        HOST,
        host.lxc_uri,
        control_plane.kubeconfig,
        state,
        # domain type auto: an lxc connection offers only lxc.
        shutdown_grace=20,
        metrics_port=0,
        rootfs_dirs=(rootfs_dir,),
    ).argv()
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield LxcAgent(host=host, state_dir=state, rootfs_dir=rootfs_dir, process=process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        hosts.stop_hosts(state / "hosts")
        sys.stderr.write(log.read_text()[-5000:])


def get(plane: ControlPlane, kind: str, name: str, namespace: str | None = NAMESPACE) -> Any:
    args = ["get", kind, name, "-o", "json", *(["-n", namespace] if namespace else [])]
    done = plane.kubectl(*args, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def bind_vm(plane: ControlPlane, name: str, spec: dict[str, Any]) -> str:
    """Create a VM and bind it to the agent's host as the controller does; its uid."""
    manifest = {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    status = json.dumps({"status": {"host": HOST, "phase": "Scheduled"}})
    plane.kubectl(
        "patch", "vm", name, "-n", NAMESPACE, "--subresource=status", "--type=merge", "-p", status
    )
    plane.kubectl("label", "vm", name, "-n", NAMESPACE, f"kubevisor.io/host={HOST}")
    return str(get(plane, "vm", name)["metadata"]["uid"])


def phase_is(plane: ControlPlane, name: str, phase: str) -> Any:
    vm = get(plane, "vm", name)
    return vm if vm and (vm.get("status") or {}).get("phase") == phase else None


def test_the_host_reports_hypervisor_type_lxc(control_plane: ControlPlane, agent: LxcAgent) -> None:
    host = eventually(
        lambda: (get(control_plane, "hvh", HOST, namespace=None) or {}).get("status"),
        what="the HypervisorHost status",
    )
    assert host["hypervisor"]["type"] == "lxc"
    assert host["capabilities"]["uefi"] is False, "whatever OVMF files the machine has"
    assert host["libvirtURI"] == agent.host.lxc_uri


def test_a_container_vm_runs_stops_on_sigterm_and_is_removed(
    control_plane: ControlPlane, agent: LxcAgent
) -> None:
    rootfs = container.build_rootfs(agent.rootfs_dir / "web")
    spec = {
        "memory": {"size": "48Mi"},
        "container": {"rootfs": str(rootfs), "init": container.HEARTBEAT_INIT},
    }
    uid = bind_vm(control_plane, "web", spec)
    running = eventually(lambda: phase_is(control_plane, "web", "Running"), what="Running")
    assert running["status"]["domain"]["uuid"] == uid
    assert agent.domstate(uid) == "running"
    eventually(lambda: container.beats(rootfs) > 1, what="the container's init counting")
    assert container.memory_kib(rootfs) == 48 * 1024
    # A user namespace: the container's root is the host's uid 100000 (<idmap>).
    assert container.uid_map(rootfs) == [(0, 100000, 65536)]

    halt = json.dumps({"spec": {"runStrategy": "Halted"}})
    control_plane.kubectl("patch", "vm", "web", "-n", NAMESPACE, "--type=merge", "-p", halt)
    eventually(lambda: phase_is(control_plane, "web", "Stopped"), timeout=60, what="Stopped")
    assert container.stopped(rootfs), "the init got SIGTERM and exited by itself"
    assert agent.domstate(uid) == "shut off"

    control_plane.kubectl("delete", "vm", "web", "-n", NAMESPACE, "--wait=true")
    eventually(lambda: agent.domstate(uid) is None, timeout=60, what="the domain undefined")


def test_a_vm_a_container_cannot_be_fails_with_every_reason(
    control_plane: ControlPlane, agent: LxcAgent
) -> None:
    spec = {
        "memory": {"size": "48Mi", "hugepages": {"pageSize": "2Mi"}},
        "firmware": {"type": "uefi"},
    }
    uid = bind_vm(control_plane, "kernel-vm", spec)
    failed = eventually(lambda: phase_is(control_plane, "kernel-vm", "Failed"), what="Failed")
    (ready,) = [c for c in failed["status"]["conditions"] if c["type"] == "Ready"]
    assert ready["reason"] == "DomainRejected"
    for field in ("container: required", "firmware: no UEFI", "memory.hugepages"):
        assert field in ready["message"]
    assert agent.domstate(uid) is None, "nothing was defined"
    control_plane.kubectl("delete", "vm", "kernel-vm", "-n", NAMESPACE, "--wait=true")


def test_a_root_filesystem_outside_the_rootfs_directory_fails_the_vm_with_the_reason(
    control_plane: ControlPlane, agent: LxcAgent, tmp_path: Path
) -> None:
    outside = container.build_rootfs(tmp_path / "rootfs")
    spec = {"memory": {"size": "48Mi"}, "container": {"rootfs": str(outside)}}
    uid = bind_vm(control_plane, "outside", spec)
    failed = eventually(lambda: phase_is(control_plane, "outside", "Failed"), what="Failed")
    (ready,) = [c for c in failed["status"]["conditions"] if c["type"] == "Ready"]
    assert ready["reason"] == "HostPathRefused"
    assert ready["message"] == (
        f"container.rootfs: {outside} is outside the directories this host allows "
        f"({agent.rootfs_dir}; the agent's --rootfs-dir)"
    )
    assert agent.domstate(uid) is None, "nothing was defined"
    control_plane.kubectl("delete", "vm", "outside", "-n", NAMESPACE, "--wait=true")
