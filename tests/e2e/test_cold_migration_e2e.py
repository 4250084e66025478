"""Cold migration on the shared e2e stack's two hosts (issue 22): a VM with a local disk is
shut down on its host, its disk copied, and it boots on the other host with the same disk
(the tiny guest's disk token) and the same MAC address."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import eventually
from kubevisor.api import quantity
from kubevisor.testbed import guest as guest_image
from stacks import Stack, disk_token_vm

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]

DISK_TOKEN = re.compile(rf"^{guest_image.DISK_TOKEN_PREFIX}([0-9a-f-]{{36}})\s*$", re.MULTILINE)
COUNTER = re.compile(rf"^{guest_image.COUNTER_PREFIX}(\d+)", re.MULTILINE)
MAC = re.compile(r"([0-9a-f]{2}(?::[0-9a-f]{2}){5})")


def serial(stack: Stack, host: str, uid: str) -> str:
    log = Path(stack.state_dirs[host]) / "vms" / uid / "serial.log"
    return log.read_text(errors="replace") if log.exists() else ""


def macs(stack: Stack, host: str, uid: str) -> list[str]:
    return MAC.findall(stack.virsh(host, "domiflist", uid))


def allocated_memory(stack: Stack, host: str) -> int:
    """Bytes of memory the controller says placement holds on `host`."""
    return quantity.to_bytes(str(stack.get("hvh", host)["status"]["allocated"]["memory"]))


def kubevisor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubevisor.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_cold_migration_boots_the_vm_on_the_other_host_with_its_disk_and_mac(
    stack: Stack, tiny_guest: Any, namespace: str
) -> None:
    stack.apply(
        namespace,
        disk_token_vm(
            "cold", tiny_guest, disk_size="64Mi", networks=[{"name": "net0", "type": "user"}]
        ),
    )
    running = stack.wait_phase(namespace, "cold", "Running", timeout=120)
    uid, source = running["metadata"]["uid"], running["status"]["host"]
    target = next(h.name for h in stack.hosts if h.name != source)
    token = eventually(
        lambda: DISK_TOKEN.findall(serial(stack, source, uid)) or None,
        timeout=90,
        what="the guest printing its disk token on the source",
    )[-1]
    mac = macs(stack, source, uid)
    assert len(mac) == 1, mac
    held = {h.name: allocated_memory(stack, h.name) for h in stack.hosts}

    done = kubevisor(
        "migrate", "cold", "--cold", "--to", target, "--name", "cold-move", "--wait",
        "-n", namespace, "--kubeconfig", str(stack.plane.kubeconfig), "--timeout", "240s",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = stack.get("migrationjob", "cold-move", namespace)
    assert job["spec"]["mode"] == "Cold"
    assert job["status"]["phase"] == "Succeeded", job["status"]
    assert job["status"]["transfer"]["message"].startswith("moved cold in"), job["status"]

    moved = eventually(
        lambda: (
            v
            if (v := stack.get("vm", "cold", namespace))["status"].get("host") == target
            and v["status"].get("phase") == "Running"
            else None
        ),
        timeout=60,
        what="the VM Running on the target",
    )
    assert moved["metadata"]["uid"] == uid
    # The claim moved with it: 128Mi less held on the source, 128Mi more on the target.
    eventually(
        lambda: (
            {h: allocated_memory(stack, h) - held[h] for h in (source, target)}
            == {source: -(128 << 20), target: 128 << 20}
        ),
        timeout=30,
        what="the VM's claim moved from the source to the target",
    )
    # It booted on the target (its counter starts again at 1: a cold move, not a live
    # one) from the disk it wrote on the source, with the same MAC.
    after = eventually(
        lambda: DISK_TOKEN.findall(serial(stack, target, uid)) or None,
        timeout=90,
        what="the guest printing its disk token on the target",
    )
    assert set(after) == {token}, (token, after)
    assert [int(n) for n in COUNTER.findall(serial(stack, target, uid))][:1] == [1]
    assert macs(stack, target, uid) == mac
    eventually(
        lambda: uid not in stack.virsh(source, "list", "--all", "--uuid").split(),
        timeout=30,
        what="the source's domain gone",
    )
