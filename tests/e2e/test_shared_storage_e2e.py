"""Shared storage end to end: hosts declaring the same spec.sharedStorage keep the disks of
the VMs created on them in one shared directory (on our machines the hosts share a
filesystem, so the directory is really shared). A live migration between them copies no
disk, and a VM whose host dies restarts elsewhere with its data; a VM on local storage
restarts from its image, and its event says its local changes are lost.

The guest proves it: at its first boot it writes a random token to its disk, at later
boots it keeps the one it finds, and twice a second it re-reads it from the disk (page
cache dropped) and prints `kubevisor-disk-token <uuid>` on its serial console.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import eventually
from stacks import ExtraHost, Stack, disk_token_vm

from .hostloss import host_spec

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]

TOKEN = re.compile(r"kubevisor-disk-token (\S+)")
STORAGE = "e2e-shared"


def vm(name: str, guest: Any) -> dict[str, Any]:
    return disk_token_vm(name, guest, disk_size="16Mi")


def tokens(log: Path) -> list[str]:
    return TOKEN.findall(log.read_text(errors="replace")) if log.exists() else []


def token_in(log: Path, *, what: str) -> str:
    """The token the guest reads from its disk, once it has printed it twice alike."""

    def steady() -> str | None:
        seen = tokens(log)
        return seen[-1] if len(seen) >= 2 and seen[-1] == seen[-2] else None

    try:
        return str(eventually(steady, timeout=90, what=what))
    except pytest.fail.Exception as error:
        tail = log.read_text(errors="replace")[-600:] if log.exists() else f"no {log}"
        pytest.fail(f"{error}; the serial log ends:\n{tail}", pytrace=False)


@pytest.fixture
def shared_hosts(
    stack: Stack, extra_host: ExtraHost, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Path]]:
    """Every host (the two shared ones and the extra one) declares the same shared storage;
    returns each host's agent state directory. Undone afterwards."""
    shared = tmp_path_factory.mktemp("shared-storage")
    states = {**stack.state_dirs, extra_host.name: extra_host.state / "agent"}
    names = [h.name for h in stack.hosts] + [extra_host.name]
    for name in names:
        host_spec(stack, name, {"sharedStorage": {"name": STORAGE, "path": str(shared)}})
    for name in names:
        eventually(
            lambda n=name: (
                ((stack.get("hvh", n)["status"].get("storage") or {}).get("shared") or {}).get(
                    "name"
                )
                == STORAGE
            ),
            timeout=60,
            what=f"host {name} to report its shared storage",
        )
    try:
        yield states
    finally:
        for host in stack.hosts:
            host_spec(stack, host.name, {"sharedStorage": None, "unschedulable": False})


def test_a_vm_on_shared_storage_migrates_without_copying_and_keeps_its_data(
    stack: Stack,
    extra_host: ExtraHost,
    shared_hosts: dict[str, Path],
    tiny_guest: Any,
    namespace: str,
) -> None:
    one, two = (h.name for h in stack.hosts)
    for other in (two, extra_host.name):
        host_spec(stack, other, {"unschedulable": True})
    stack.apply(namespace, vm("nfs-vm", tiny_guest))
    running = stack.wait_phase(namespace, "nfs-vm", "Running")
    uid = running["metadata"]["uid"]
    assert running["status"]["host"] == one
    assert running["status"]["storage"] == {
        "location": "Shared",
        "sharedStorage": STORAGE,
        "host": one,
    }
    before = token_in(shared_hosts[one] / "vms" / uid / "serial.log", what="the guest's token")
    overlay = stack.virsh(one, "domblklist", uid)
    assert "/vms/" + uid + "/disk-data.qcow2" in overlay and str(shared_hosts[one]) not in overlay
    host_spec(stack, two, {"unschedulable": False})

    stack.start_migration(namespace, "nfs-move", "nfs-vm", targetHost=two)
    done = stack.wait_migration(namespace, "nfs-move")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    # The same file on both hosts: nothing was copied, and the guest still reads its token.
    assert stack.virsh(two, "domblklist", uid).split()[-1] == overlay.split()[-1]
    after_log = shared_hosts[two] / "vms" / uid / "serial.log"
    eventually(lambda: len(tokens(after_log)) >= 2, timeout=60, what="the guest's token there")
    assert set(tokens(after_log)) == {before}


def test_after_host_loss_shared_storage_keeps_the_data_and_local_storage_loses_it(
    stack: Stack,
    extra_host: ExtraHost,
    shared_hosts: dict[str, Path],
    tiny_guest: Any,
    namespace: str,
) -> None:
    lost = extra_host.name
    for host in stack.hosts:  # so both VMs start on the host that will die
        host_spec(stack, host.name, {"unschedulable": True})
    # One VM created before its host shared anything: its overlay stays on the host's disk.
    host_spec(stack, lost, {"sharedStorage": None})
    eventually(
        lambda: not (stack.get("hvh", lost)["status"].get("storage") or {}).get("shared"),
        timeout=60,
        what="the host to drop its shared storage",
    )
    stack.apply(namespace, vm("local-vm", tiny_guest))
    local = stack.wait_phase(namespace, "local-vm", "Running")
    host_spec(stack, lost, {"sharedStorage": {"name": STORAGE, "path": _shared_path(stack)}})
    eventually(
        lambda: (stack.get("hvh", lost)["status"].get("storage") or {}).get("shared"),
        timeout=60,
        what="the host to share storage again",
    )
    stack.apply(namespace, vm("shared-vm", tiny_guest))
    shared = stack.wait_phase(namespace, "shared-vm", "Running")
    assert local["status"]["storage"]["location"] == "Local"
    assert shared["status"]["storage"]["location"] == "Shared"
    before = {
        name: token_in(
            shared_hosts[lost] / "vms" / obj["metadata"]["uid"] / "serial.log",
            what=f"{name}'s token",
        )
        for name, obj in (("local-vm", local), ("shared-vm", shared))
    }
    for host in stack.hosts:
        host_spec(stack, host.name, {"unschedulable": False})

    extra_host.kill()
    after = {}
    for name, obj in (("local-vm", local), ("shared-vm", shared)):
        moved = eventually(
            lambda n=name: (
                v
                if (v := stack.get("vm", n, namespace))["status"].get("phase") == "Running"
                and v["status"].get("host") != lost
                else None
            ),
            timeout=150,
            what=f"{name} Running on another host after the grace period",
        )
        log = shared_hosts[moved["status"]["host"]] / "vms" / obj["metadata"]["uid"] / "serial.log"
        after[name] = token_in(log, what=f"{name}'s token after the restart")
    assert after["shared-vm"] == before["shared-vm"]
    assert after["local-vm"] != before["local-vm"]

    events = json.loads(stack.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)[
        "items"
    ]
    said: dict[str, str] = {}
    for event in events:
        name = event["involvedObject"]["name"]
        said[name] = said.get(name, "") + " | " + event["message"]
    assert "shared storage" in said["shared-vm"], said
    assert "lost" in said["local-vm"], said


def _shared_path(stack: Stack) -> str:
    host = stack.get("hvh", stack.hosts[0].name)
    return str(host["spec"]["sharedStorage"]["path"])
