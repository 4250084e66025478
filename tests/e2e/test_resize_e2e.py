"""Resize through the whole stack (issue 15, point 1): a VM patched to more vCPUs than
its host has free and restarted with `kubevisor restart` stays stopped with the numbers,
the host's CPU ALLOCATED stays the sum of its claims, and it starts at the new size once
capacity is freed."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

import builders
from harness import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]

PIN = "e2e-resize"


def vm(name: str, vcpus: int) -> dict[str, Any]:
    return builders.tiny_vm(name, cpu={"vcpus": vcpus}, placement={"hostSelector": {PIN: "yes"}})


@pytest.fixture
def three_vcpu_host(stack: Any) -> Iterator[str]:
    """The first host, labelled for this test's VMs, at 3 allocatable vCPUs."""
    host = stack.hosts[0].name
    saved = stack.get("hvh", host)["spec"]
    cpus = int(stack.get("hvh", host)["status"]["capacity"]["cpu"])
    stack.kubectl("label", "hvh", host, f"{PIN}=yes")
    ratio = {"spec": {"allocationRatios": {"cpu": 3 / cpus}}}
    stack.kubectl("patch", "hvh", host, "--type=merge", "-p", json.dumps(ratio))
    eventually(
        lambda: stack.get("hvh", host)["status"]["allocatable"]["cpu"] == 3,
        what="3 allocatable vCPUs",
    )
    try:
        yield host
    finally:
        stack.kubectl("label", "hvh", host, f"{PIN}-")
        restore = {"spec": {"allocationRatios": None, **saved}}
        stack.kubectl("patch", "hvh", host, "--type=merge", "-p", json.dumps(restore))


def cpu_allocated_column(stack: Any, host: str) -> str:
    """`kubectl get hvh -o wide` as a user reads it: the CPU ALLOCATED column (kubectl
    left-aligns each value under its title)."""
    header, row = stack.kubectl("get", "hvh", host, "-o", "wide").stdout.splitlines()[:2]
    return str(row[header.index("CPU ALLOCATED") :].split()[0])


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def restart(stack: Any, namespace: str, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "kubevisor.cli.main",
            "restart",
            name,
            "-n",
            namespace,
            "--timeout",
            "120s",
            "--kubeconfig",
            str(stack.plane.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_a_resize_beyond_the_free_vcpus_is_refused_then_applied_once_they_are_freed(
    stack: Any, namespace: str, three_vcpu_host: str
) -> None:
    host = three_vcpu_host
    stack.apply(namespace, vm("a", 1), vm("b", 1), vm("minimal", 1))
    for name in ("a", "b", "minimal"):
        assert stack.wait_phase(namespace, name, "Running", timeout=180)["status"]["host"] == host
    eventually(
        lambda: stack.get("hvh", host)["status"]["allocated"]["cpu"] == 3,
        what="3 vCPUs allocated",
    )

    patch = {"spec": {"cpu": {"vcpus": 2}}}
    stack.kubectl(
        "patch", "vm", "minimal", "-n", namespace, "--type=merge", "-p", json.dumps(patch)
    )
    eventually(
        lambda: (
            condition(stack.get("vm", "minimal", namespace), "RestartRequired")["status"] == "True"
        ),
        what="RestartRequired once the running domain predates the spec",
    )
    done = restart(stack, namespace, "minimal")
    assert done.returncode == 0, done.stderr

    ratio = stack.get("hvh", host)["spec"]["allocationRatios"]["cpu"]
    refusal = (
        f"resize to 2 vCPUs, 128Mi memory refused on host {host}: "
        f"host {host} has 1 vCPUs free of 3 (ratio {ratio:g}), needs 2"
    )
    held = eventually(
        lambda: (
            obj
            if condition(obj := stack.get("vm", "minimal", namespace), "Ready")["reason"]
            == "ResizeRefused"
            else None
        ),
        timeout=60,
        what="the agent to report the refused resize",
    )
    assert held["status"]["phase"] == "Stopped"
    assert condition(held, "Ready")["message"] == refusal
    assert condition(held, "Scheduled")["message"] == refusal
    assert held["status"]["placement"]["size"]["vcpus"] == 1
    uid = held["metadata"]["uid"]
    assert stack.virsh(host, "domstate", uid) == "shut off"
    assert stack.get("hvh", host)["status"]["allocated"]["cpu"] == 3
    assert cpu_allocated_column(stack, host) == "3"

    # Capacity freed on the host: the controller claims the new size, the agent starts it.
    stack.kubectl("delete", "vm", "b", "-n", namespace, "--wait=true", "--timeout=120s")
    resized = stack.wait_phase(namespace, "minimal", "Running", timeout=120)
    assert resized["status"]["host"] == host
    assert resized["status"]["placement"]["size"]["vcpus"] == 2
    assert condition(resized, "Scheduled")["reason"] == "Resized"
    live = ET.fromstring(stack.virsh(host, "dumpxml", uid))
    assert live.findtext("vcpu") == "2"
    eventually(
        lambda: stack.get("hvh", host)["status"]["allocated"]["cpu"] == 1 + 2,
        what="allocated to follow the resize",
    )
