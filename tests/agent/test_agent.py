"""The agent against the real control plane and a real libvirtd host running QEMU guests.

The test binds VMs to the host itself (label and status.host, as the controller will),
then watches what the agent does through the API server and through virsh.
"""

from __future__ import annotations

import datetime
import json
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import eventually
from kubevisor.testbed import hosts
from kubevisor.testbed.commands import AgentOptions
from kubevisor.testbed.controlplane import ControlPlane
from kubevisor.testbed.guest import Guest
from kubevisor.testbed.hosts import LocalHost

pytestmark = [pytest.mark.apiserver, pytest.mark.libvirtd]

NAMESPACE = "agent-test"
MARKER = "KUBEVISOR-GUEST-READY"


@dataclass
class AgentProcess:
    host: LocalHost
    name: str
    state_dir: Path
    log: Path
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=30)

    def virsh(self, *args: str) -> str:
        return subprocess.run(
            ["virsh", "-c", self.host.uri, *args], check=True, capture_output=True, text=True
        ).stdout.strip()


@pytest.fixture(scope="module")
def agent(
    control_plane: ControlPlane,
    local_hosts: list[LocalHost],
    tiny_guest: Guest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AgentProcess]:
    host = local_hosts[0]
    for namespace in ("kubevisor-system", NAMESPACE):
        control_plane.kubectl("create", "namespace", namespace, check=False)
    state = tmp_path_factory.mktemp("agent")
    proc = AgentProcess(
        host=host,
        name="agent-test-host",
        state_dir=state,
        log=state / "agent.log",
        argv=AgentOptions(
            "agent-test-host",
            host.uri,
            control_plane.kubeconfig,
            state,
            domain_type="qemu",
            guest=tiny_guest,
            shutdown_grace=20,
            metrics_port=0,
            boot_dirs=(state / "boot",),
        ).argv(),
    )
    proc.start()
    try:
        yield proc
    finally:
        if proc.process is not None and proc.process.poll() is None:
            proc.kill(signal.SIGTERM)
        sys.stderr.write(proc.log.read_text()[-5000:])


def get(plane: ControlPlane, kind: str, name: str, namespace: str | None = NAMESPACE) -> Any:
    args = ["get", kind, name, "-o", "json"]
    if namespace:
        args += ["-n", namespace]
    done = plane.kubectl(*args, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def bind_vm(plane: ControlPlane, name: str, host: str, **spec: Any) -> dict[str, Any]:
    """Create a VM and bind it to `host` in the controller's order: status, then label."""
    manifest = {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"memory": {"size": "96Mi"}, **spec},
    }
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    plane.kubectl(
        "patch",
        "vm",
        name,
        "-n",
        NAMESPACE,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"host": host, "phase": "Scheduled"}}),
    )
    plane.kubectl("label", "vm", name, "-n", NAMESPACE, f"kubevisor.io/host={host}")
    vm: dict[str, Any] = get(plane, "vm", name)
    return vm


def phase_is(plane: ControlPlane, name: str, phase: str) -> Any:
    vm = get(plane, "vm", name)
    return vm if vm and (vm.get("status") or {}).get("phase") == phase else None


def condition(vm: dict[str, Any], type_: str) -> str | None:
    for c in vm.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return str(c["status"])
    return None


def domstate(agent: AgentProcess, uid: str) -> str | None:
    done = subprocess.run(
        ["virsh", "-c", agent.host.uri, "domstate", uid], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else None


def counter(agent: AgentProcess, uid: str) -> int:
    log = agent.state_dir / "vms" / uid / "serial.log"
    numbers = [
        int(line.split()[-1])
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith("kubevisor-counter ") and line.split()[-1].isdigit()
    ]
    return max(numbers, default=-1)


def test_host_registers_with_the_real_topology(
    control_plane: ControlPlane, agent: AgentProcess
) -> None:
    host = eventually(
        lambda: (
            (get(control_plane, "hvh", agent.name, namespace=None) or {})
            .get("status", {})
            .get("numaCells")
            and get(control_plane, "hvh", agent.name, namespace=None)
        ),
        what="the HypervisorHost status",
    )
    caps = ET.fromstring(agent.virsh("capabilities"))
    cells = caps.findall("host/topology/cells/cell")
    assert len(host["status"]["numaCells"]) == len(cells)
    assert host["status"]["capacity"]["cpu"] == len(
        caps.findall("host/topology/cells/cell/cpus/cpu")
    )
    assert host["status"]["hypervisor"]["type"] == "qemu"
    # Under TCG (domain type qemu) libvirt marks the generic named models usable.
    assert {"qemu64", "Nehalem"} <= set(host["status"]["cpu"]["usableModels"])
    assert host["status"]["storage"]["capacity"]
    assert (
        host["status"]["capabilities"]["uefi"] is Path("/usr/share/OVMF/OVMF_CODE_4M.fd").exists()
    )
    ksm = Path("/sys/kernel/mm/ksm/run")
    if ksm.exists():
        assert host["status"]["ksm"]["running"] is (ksm.read_text().strip() == "1")
    assert host["status"]["libvirtURI"] == agent.host.uri
    lease = json.loads(
        control_plane.kubectl(
            "get", "lease", agent.name, "-n", "kubevisor-system", "-o", "json"
        ).stdout
    )
    assert lease["spec"]["holderIdentity"] == agent.name


def test_bound_vm_runs_stops_starts_and_is_removed(
    control_plane: ControlPlane, agent: AgentProcess
) -> None:
    vm = bind_vm(control_plane, "life", agent.name)
    uid = vm["metadata"]["uid"]
    running = eventually(lambda: phase_is(control_plane, "life", "Running"), what="phase Running")
    assert condition(running, "Ready") == "True"
    assert running["status"]["domain"]["uuid"] == uid
    assert domstate(agent, uid) == "running"
    serial = agent.state_dir / "vms" / uid / "serial.log"
    eventually(
        lambda: serial.exists() and MARKER in serial.read_text(errors="replace"),
        timeout=90,
        what="the guest's boot marker on its serial console",
    )

    control_plane.kubectl(
        "patch",
        "vm",
        "life",
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        '{"spec":{"runStrategy":"Halted"}}',
    )
    stopped = eventually(
        lambda: phase_is(control_plane, "life", "Stopped"), timeout=90, what="phase Stopped"
    )
    assert condition(stopped, "Ready") == "True"
    assert domstate(agent, uid) == "shut off"

    control_plane.kubectl(
        "patch",
        "vm",
        "life",
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        '{"spec":{"runStrategy":"Always"}}',
    )
    eventually(lambda: phase_is(control_plane, "life", "Running"), what="Running again")
    assert domstate(agent, uid) == "running"

    control_plane.kubectl("delete", "vm", "life", "-n", NAMESPACE, "--wait=true")
    eventually(lambda: domstate(agent, uid) is None, timeout=60, what="the domain to be undefined")
    eventually(lambda: not (agent.state_dir / "vms" / uid).exists(), what="the VM's files removed")


def test_agent_restart_adopts_running_domains(
    control_plane: ControlPlane, agent: AgentProcess
) -> None:
    vm = bind_vm(control_plane, "adopt", agent.name)
    uid = vm["metadata"]["uid"]
    eventually(lambda: phase_is(control_plane, "adopt", "Running"), what="phase Running")
    domain_id = agent.virsh("domid", uid)
    eventually(lambda: counter(agent, uid) >= 0, timeout=90, what="the guest's counter")

    agent.kill(signal.SIGKILL)
    restarted = datetime.datetime.now(datetime.UTC)
    agent.start()
    eventually(
        lambda: lease_renewed_after(control_plane, agent.name, restarted),
        what="the restarted agent to heartbeat (it fences before that)",
    )
    assert agent.virsh("domid", uid) == domain_id, "the guest was restarted or fenced"
    now = counter(agent, uid)
    eventually(
        lambda: counter(agent, uid) > now + 2,
        timeout=60,
        what="the guest's counter to keep increasing",
    )
    # The new agent drives the adopted domain: pause and resume it.
    control_plane.kubectl(
        "patch", "vm", "adopt", "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"paused":true}}'
    )
    eventually(lambda: phase_is(control_plane, "adopt", "Paused"), what="phase Paused")
    assert domstate(agent, uid) == "paused"
    control_plane.kubectl(
        "patch", "vm", "adopt", "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"paused":false}}'
    )
    running = eventually(lambda: phase_is(control_plane, "adopt", "Running"), what="Running")
    assert condition(running, "Ready") == "True"
    assert agent.virsh("domid", uid) == domain_id
    control_plane.kubectl("delete", "vm", "adopt", "-n", NAMESPACE)
    eventually(lambda: domstate(agent, uid) is None, timeout=60, what="the domain removed")


def lease_renewed_after(plane: ControlPlane, name: str, when: datetime.datetime) -> bool:
    lease = get(plane, "lease", name, namespace="kubevisor-system")
    renewed = datetime.datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
    return renewed > when


def test_stray_domain_with_kubevisor_metadata_is_fenced(
    control_plane: ControlPlane, agent: AgentProcess, tiny_guest: Guest, tmp_path: Path
) -> None:
    eventually(lambda: get(control_plane, "hvh", agent.name, namespace=None), what="agent ready")
    stray_uid = "0b0e5f0c-1111-4222-8333-444455556666"
    xml = ET.fromstring(
        tiny_guest.domain_xml(
            name=f"{NAMESPACE}_ghost", serial_log=tmp_path / "s.log", uuid=stray_uid
        )
    )
    metadata = ET.SubElement(xml, "metadata")
    ET.SubElement(
        metadata,
        "{https://kubevisor.io/xmlns/domain/v1alpha1}vm",
        namespace=NAMESPACE,
        name="ghost",
        uid=stray_uid,
        generation="1",
    )
    path = tmp_path / "ghost.xml"
    path.write_text(ET.tostring(xml, encoding="unicode"))
    agent.virsh("define", str(path))
    eventually(
        lambda: domstate(agent, stray_uid) is None, timeout=60, what="the stray domain to be fenced"
    )
    events = control_plane.kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout
    assert any(
        e["reason"] == "Fenced" and e["involvedObject"]["name"] == "ghost"
        for e in json.loads(events)["items"]
    )


def test_missing_base_image_stalls_with_a_reason(
    control_plane: ControlPlane, agent: AgentProcess
) -> None:
    bind_vm(control_plane, "huge", agent.name, disks=[{"name": "root", "image": "missing.qcow2"}])
    failed = eventually(lambda: phase_is(control_plane, "huge", "Failed"), what="phase Failed")
    stalled = next(c for c in failed["status"]["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert "missing.qcow2" in stalled["message"]
    control_plane.kubectl("delete", "vm", "huge", "-n", NAMESPACE)


@pytest.mark.parametrize(
    ("kernel", "says"),
    [
        pytest.param("/etc/shadow", "boot.kernel: /etc/shadow is outside", id="a-host-file"),
        pytest.param(
            "{boot}/shadow", "boot.kernel: {boot}/shadow resolves to /etc/shadow", id="a-symlink"
        ),
    ],
)
def test_a_kernel_path_outside_the_boot_directory_fails_the_vm_with_the_reason(
    control_plane: ControlPlane, agent: AgentProcess, kernel: str, says: str
) -> None:
    boot = agent.state_dir / "boot"
    boot.mkdir(exist_ok=True)
    if not (boot / "shadow").is_symlink():
        (boot / "shadow").symlink_to("/etc/shadow")
    name = f"escape-{'link' if '{boot}' in kernel else 'file'}"
    vm = bind_vm(control_plane, name, agent.name, boot={"kernel": kernel.format(boot=boot)})
    failed = eventually(lambda: phase_is(control_plane, name, "Failed"), what="phase Failed")
    ready = next(c for c in failed["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "HostPathRefused"
    assert says.format(boot=boot) in ready["message"]
    # The directories the agent declares, its own first (the tiny guest's follow).
    assert f"this host allows ({boot}" in ready["message"]
    assert "the agent's --boot-dir)" in ready["message"]
    assert domstate(agent, vm["metadata"]["uid"]) is None, "nothing was defined"
    control_plane.kubectl("delete", "vm", name, "-n", NAMESPACE)


def test_agent_reconnects_when_libvirtd_restarts(
    control_plane: ControlPlane, agent: AgentProcess, local_hosts: list[LocalHost]
) -> None:
    vm = bind_vm(control_plane, "phoenix", agent.name)
    uid = vm["metadata"]["uid"]
    eventually(lambda: phase_is(control_plane, "phoenix", "Running"), what="phase Running")
    # Stopping a local host takes its libvirtd and its guests down; starting it again
    # brings back the same libvirtd (same state dir, port and UUID) with the domain defined.
    state_dir = agent.host.root.parent
    hosts.stop_hosts(state_dir)
    hosts.start_hosts(len(local_hosts), state_dir=state_dir)
    eventually(
        lambda: domstate(agent, uid) == "running",
        timeout=120,
        what="the agent to reconnect and start the guest again",
    )
    running = eventually(lambda: phase_is(control_plane, "phoenix", "Running"), what="Running")
    assert running["status"]["domain"]["state"] == "running"
    assert "connected" in agent.log.read_text()
    control_plane.kubectl("delete", "vm", "phoenix", "-n", NAMESPACE)
    eventually(lambda: domstate(agent, uid) is None, timeout=60, what="the domain removed")


def test_overlay_disk_and_seed_iso_live_and_die_with_the_vm(
    control_plane: ControlPlane, agent: AgentProcess
) -> None:
    vm = bind_vm(
        control_plane,
        "files",
        agent.name,
        disks=[{"name": "data", "size": "16Mi"}],
        cloudInit={"userData": "#cloud-config\nhostname: files\n"},
    )
    uid = vm["metadata"]["uid"]
    eventually(lambda: phase_is(control_plane, "files", "Running"), what="phase Running")
    directory = agent.state_dir / "vms" / uid
    overlay, seed = directory / "disk-data.qcow2", directory / "seed.iso"
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(overlay)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert (info["format"], info["virtual-size"]) == ("qcow2", 16 * 1024 * 1024)
    assert seed.stat().st_size > 0
    live = ET.fromstring(agent.virsh("dumpxml", uid))
    sources = {d.find("source").get("file") for d in live.findall("devices/disk")}
    assert {str(overlay), str(seed)} <= sources
    control_plane.kubectl("delete", "vm", "files", "-n", NAMESPACE, "--wait=true")
    eventually(lambda: domstate(agent, uid) is None, timeout=60, what="the domain removed")
    eventually(lambda: not directory.exists(), what="the overlay and seed ISO removed")


def test_a_deleted_host_object_comes_back_and_its_guests_keep_running(
    control_plane: ControlPlane, agent: AgentProcess, tmp_path: Path
) -> None:
    """Issue 15, point 7: the object stayed deleted, the agent failing every status write."""
    vm = bind_vm(control_plane, "survivor", agent.name)
    uid = vm["metadata"]["uid"]
    eventually(lambda: phase_is(control_plane, "survivor", "Running"), what="phase Running")
    domain_id = agent.virsh("domid", uid)
    # What an admin set on the host; the agent shows it read it in status.storage.shared.
    control_plane.kubectl("label", "hvh", agent.name, "example.com/rack=r1")
    shared = {"sharedStorage": {"name": "nfs", "path": str(tmp_path)}}
    control_plane.kubectl(
        "patch", "hvh", agent.name, "--type=merge", "-p", json.dumps({"spec": shared})
    )

    def host() -> Any:
        return get(control_plane, "hvh", agent.name, namespace=None)

    def shared_name(obj: Any) -> str | None:
        storage = ((obj or {}).get("status") or {}).get("storage") or {}
        return (storage.get("shared") or {}).get("name")

    before = eventually(lambda: shared_name(host()) == "nfs" and host(), what="the spec read")

    control_plane.kubectl("delete", "hvh", agent.name, "--wait=true")

    def registered_again() -> Any:
        obj = host()
        new = obj is not None and obj["metadata"]["uid"] != before["metadata"]["uid"]
        return obj if new and shared_name(obj) == "nfs" else None

    back = eventually(registered_again, what="the host object registered again, with status")
    assert back["metadata"]["labels"]["example.com/rack"] == "r1"
    assert back["spec"] == before["spec"]
    assert back["status"]["numaCells"] == before["status"]["numaCells"]
    assert agent.virsh("domid", uid) == domain_id, "the guest was restarted"
    assert phase_is(control_plane, "survivor", "Running")

    control_plane.kubectl(
        "patch", "hvh", agent.name, "--type=merge", "-p", '{"spec":{"sharedStorage":null}}'
    )
    control_plane.kubectl("label", "hvh", agent.name, "example.com/rack-")
    eventually(lambda: shared_name(host()) is None, what="the shared storage gone again")
    control_plane.kubectl("delete", "vm", "survivor", "-n", NAMESPACE)
    eventually(lambda: domstate(agent, uid) is None, timeout=60, what="the domain removed")
