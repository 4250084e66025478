"""kubectl apply a VM, get a running VM with honest status (controller + agents + QEMU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from builders import tiny_vm as vm
from harness import eventually
from stacks import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]

MARKER = "KUBEVISOR-GUEST-READY"


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return None


def test_minimal_vm_runs_and_kubectl_wait_returns(stack: Stack, namespace: str) -> None:
    example = Path(__file__).parents[2] / "deploy" / "examples" / "01-minimal-vm.yaml"
    stack.kubectl("apply", "-n", namespace, "-f", str(example))
    stack.kubectl(
        "wait", "vm/minimal", "-n", namespace, "--for=condition=Ready", "--timeout=90s", timeout=100
    )
    running = stack.wait_phase(namespace, "minimal", "Running")
    host = running["status"]["host"]
    assert running["metadata"]["labels"]["kubevisor.io/host"] == host
    assert condition(running, "Scheduled")["status"] == "True"
    assert running["status"]["observedGeneration"] == running["metadata"]["generation"]
    uid = running["metadata"]["uid"]
    assert uid in stack.domains(host)
    serial = stack.state_dirs[host] / "vms" / uid / "serial.log"
    eventually(
        lambda: serial.exists() and MARKER in serial.read_text(errors="replace"),
        timeout=90,
        what="the guest's marker on its serial console",
    )
    events = stack.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=Scheduled", "-o", "name"
    ).stdout
    assert events.strip(), "no Scheduled event"


def test_anti_affinity_spreads_and_the_third_waits_until_one_goes(
    stack: Stack, namespace: str
) -> None:
    group = {"group": "db", "policy": "anti-affinity"}
    stack.apply(namespace, *(vm(f"db-{i}", placement=group) for i in range(3)))
    eventually(
        lambda: (
            sorted(stack.phase(namespace, f"db-{i}") or "" for i in range(3))
            == ["Running", "Running", "Unschedulable"]
        ),
        timeout=120,
        what="two Running and one Unschedulable",
    )
    vms = {v["metadata"]["name"]: v for v in stack.vms(namespace)}
    waiting = next(v for v in vms.values() if v["status"]["phase"] == "Unschedulable")
    hosts = {v["status"]["host"] for v in vms.values() if v["status"]["phase"] == "Running"}
    assert len(hosts) == 2
    message = condition(waiting, "Scheduled")["message"]
    assert "anti-affinity" in message, message
    victim = next(n for n, v in vms.items() if v["status"]["phase"] == "Running")
    stack.kubectl("delete", "vm", victim, "-n", namespace)
    stack.wait_phase(namespace, waiting["metadata"]["name"], "Running", timeout=120)


def test_halted_stops_always_starts_and_vcpu_change_needs_restart(
    stack: Stack, namespace: str
) -> None:
    stack.apply(namespace, vm("toggle"))
    stack.wait_phase(namespace, "toggle", "Running")
    stack.kubectl(
        "patch",
        "vm",
        "toggle",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"runStrategy":"Halted"}}',
    )
    stopped = stack.wait_phase(namespace, "toggle", "Stopped")
    assert condition(stopped, "Ready")["status"] == "True"
    stack.kubectl(
        "patch",
        "vm",
        "toggle",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"runStrategy":"Always"}}',
    )
    stack.wait_phase(namespace, "toggle", "Running")
    stack.kubectl(
        "patch",
        "vm",
        "toggle",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"cpu":{"vcpus":2}}}',
    )
    changed = eventually(
        lambda: (
            (v := stack.get("vm", "toggle", namespace))
            and (c := condition(v, "RestartRequired"))
            and c["status"] == "True"
            and v
        ),
        what="RestartRequired=True",
    )
    assert changed["status"]["phase"] == "Running"


def test_deleting_vms_leaves_no_domain_file_or_claim(stack: Stack, namespace: str) -> None:
    stack.apply(namespace, vm("gone-0"), vm("gone-1"))
    uids = {}
    for name in ("gone-0", "gone-1"):
        running = stack.wait_phase(namespace, name, "Running")
        uids[running["metadata"]["uid"]] = running["status"]["host"]
    stack.kubectl(
        "delete",
        "vm",
        "gone-0",
        "gone-1",
        "-n",
        namespace,
        "--wait=true",
        "--timeout=90s",
        timeout=100,
    )
    for uid, host in uids.items():
        assert uid not in stack.domains(host)
        assert not (stack.state_dirs[host] / "vms" / uid).exists()
    for host in {h for h in uids.values()}:
        eventually(
            lambda h=host: _vm_count(stack, h) == _bound(stack, h),
            what=f"host {host}'s vmCount to match its bound VMs",
        )


def _vm_count(stack: Stack, host: str) -> int:
    return int(((stack.get("hvh", host) or {}).get("status") or {}).get("vmCount") or 0)


def _bound(stack: Stack, host: str) -> int:
    out = stack.kubectl("get", "vm", "-A", "-l", f"kubevisor.io/host={host}", "-o", "name")
    return len(out.stdout.split())


def test_silent_host_goes_not_ready_and_its_vms_unknown(stack: Stack, namespace: str) -> None:
    stack.apply(namespace, vm("watched"))
    running = stack.wait_phase(namespace, "watched", "Running")
    host = running["status"]["host"]
    agent = stack.agents[host]
    agent.kill()  # SIGKILL: the Lease is no longer renewed; the guest itself keeps running
    try:
        unknown = stack.wait_phase(namespace, "watched", "Unknown", timeout=60)
        ready = condition(unknown, "Ready")
        assert ready["status"] == "Unknown" and host in ready["message"]
        judged = stack.get("hvh", host)
        assert condition(judged, "Ready")["status"] == "False"
        assert condition(judged, "Schedulable")["status"] == "False"
    finally:
        agent.start()
    back = stack.wait_phase(namespace, "watched", "Running", timeout=90)
    assert back["metadata"]["uid"] in stack.domains(host)
    eventually(
        lambda: condition(stack.get("hvh", host), "Ready")["status"] == "True",
        what=f"host {host} Ready again",
    )
