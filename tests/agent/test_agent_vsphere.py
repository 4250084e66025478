"""The agent managing one ESXi host of a vCenter (`--libvirt-uri vsphere://...`): the real
control plane and a real vcsim, the agent as its own process.

Like test_agent.py, the test binds VMs to the host itself (status.host, then the label, as
the controller does) and checks what the agent did through the API server and vSphere.
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

from harness import eventually
from kubevisor.testbed.commands import AgentOptions
from kubevisor.testbed.controlplane import ControlPlane
from kubevisor.testbed.vcsim import Vcsim

pytestmark = [pytest.mark.apiserver, pytest.mark.vcsim]

NAMESPACE = "agent-vsphere-test"
HOST = "vsphere-h0"
ESXI = "DC0_C0_H0"


@dataclass
class AgentProcess:
    log: Path
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def agent(
    control_plane: ControlPlane, vcsim_server: Vcsim, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    for namespace in ("kubevisor-system", NAMESPACE):
        control_plane.kubectl("create", "namespace", namespace, check=False)
    state = tmp_path_factory.mktemp("agent-vsphere")
    secret = state / "credentials"
    secret.mkdir()
    (secret / "username").write_text(vcsim_server.username)
    (secret / "password").write_text(vcsim_server.password)
    argv = AgentOptions(
        HOST,
        vcsim_server.host_uri(ESXI),
        control_plane.kubeconfig,
        state,
        vsphere_credentials=secret,
        vsphere_insecure=True,
        shutdown_grace=10,
        metrics_port=0,
    ).argv()
    log = state / "agent.log"
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield AgentProcess(log=log, process=process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        sys.stderr.write(log.read_text()[-5000:])


def get(plane: ControlPlane, kind: str, name: str, namespace: str | None = NAMESPACE) -> Any:
    args = ["get", kind, name, "-o", "json"]
    if namespace:
        args += ["-n", namespace]
    done = plane.kubectl(*args, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def phase_is(plane: ControlPlane, name: str, phase: str) -> Any:
    vm = get(plane, "vm", name)
    return vm if vm and (vm.get("status") or {}).get("phase") == phase else None


def bind_vm(plane: ControlPlane, name: str, **spec: Any) -> dict[str, Any]:
    """Create a VM and bind it to the vSphere host in the controller's order."""
    manifest = {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"cpu": {"vcpus": 2}, "memory": {"size": "256Mi"}, **spec},
    }
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    patch = json.dumps({"status": {"host": HOST, "phase": "Scheduled"}})
    plane.kubectl(
        "patch", "vm", name, "-n", NAMESPACE, "--subresource=status", "--type=merge", "-p", patch
    )
    plane.kubectl("label", "vm", name, "-n", NAMESPACE, f"kubevisor.io/host={HOST}")
    vm: dict[str, Any] = get(plane, "vm", name)
    return vm


def test_the_esxi_host_registers_as_a_vmware_hypervisor_host(
    control_plane: ControlPlane, vcsim_server: Vcsim, agent: AgentProcess
) -> None:
    def registered() -> Any:
        host = get(control_plane, "hypervisorhost", HOST, namespace=None)
        status = (host or {}).get("status") or {}
        return status if status.get("hypervisor") else None

    status = eventually(registered, what="the HypervisorHost's status")
    assert status["hypervisor"]["type"] == "vmware"
    assert status["libvirtURI"] == vcsim_server.host_uri(ESXI)
    assert status["capacity"]["cpu"] >= 1
    # The datastores (vcsim's shared one: 4 TiB), not the agent's own image directory.
    assert status["capacity"]["disk"] == "4Ti"
    assert status["cpu"]["model"]


def test_a_bound_vm_runs_stops_and_goes_on_vsphere(
    control_plane: ControlPlane, vcsim_server: Vcsim, agent: AgentProcess
) -> None:
    uid = bind_vm(control_plane, "esx-web")["metadata"]["uid"]
    running = eventually(lambda: phase_is(control_plane, "esx-web", "Running"), what="Running")
    assert running["status"]["domain"]["uuid"] == uid
    seen = vcsim_server.vm(uid)
    assert seen is not None
    assert (seen.power_state, seen.host, seen.memory_mib, seen.vcpus) == (
        "poweredOn",
        ESXI,
        256,
        2,
    )

    halt = '{"spec":{"runStrategy":"Halted"}}'
    control_plane.kubectl("patch", "vm", "esx-web", "-n", NAMESPACE, "--type=merge", "-p", halt)
    eventually(lambda: phase_is(control_plane, "esx-web", "Stopped"), what="phase Stopped")
    stopped = vcsim_server.vm(uid)
    assert stopped is not None and stopped.power_state == "poweredOff"

    control_plane.kubectl("delete", "vm", "esx-web", "-n", NAMESPACE, "--wait=true")
    eventually(lambda: vcsim_server.vm(uid) is None, what="the VM deleted from vSphere")


def test_a_vm_asking_for_what_vsphere_does_not_map_says_so(
    control_plane: ControlPlane, vcsim_server: Vcsim, agent: AgentProcess
) -> None:
    uid = bind_vm(control_plane, "esx-net", networks=[{"name": "default"}])["metadata"]["uid"]
    failed = eventually(lambda: phase_is(control_plane, "esx-net", "Failed"), what="Failed")
    stalled = next(c for c in failed["status"]["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "DomainRejected")
    assert "cannot give a VM network interfaces" in stalled["message"]
    assert vcsim_server.vm(uid) is None
    control_plane.kubectl("delete", "vm", "esx-net", "-n", NAMESPACE, "--wait=true")
