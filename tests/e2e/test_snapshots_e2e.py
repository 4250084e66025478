"""Snapshots end to end on the shared stack: a running VM's disk is copied without stopping
it, into an image in its host's cache, and a stopped VM goes back to it.

The guest proves what was copied: at its first boot it writes a random token to its disk
and keeps re-reading it (page cache dropped), printing `kubevisor-disk-token <uuid>`. The
test snapshots the running VM, writes another token from inside the guest, stops the VM,
restores the snapshot and starts it: the snapshot's token is back, in the same VM (uid).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest

from e2e.test_shared_storage_e2e import vm
from harness import eventually
from kubevisor.cli import main as cli
from kubevisor.testbed import guest as guest_image
from kubevisor.testbed.guestshell import GuestShell
from stacks import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]

TOKEN = re.compile(r"kubevisor-disk-token (\S+)")


def token_after(log: Path, offset: int, *, what: str) -> str:
    """The token the guest reads from its disk, printed twice alike after `offset` bytes of
    its serial log (so: by this boot, after this moment)."""

    def steady() -> str | None:
        text = log.read_text(errors="replace")[offset:] if log.exists() else ""
        seen = TOKEN.findall(text)
        return seen[-1] if len(seen) >= 2 and seen[-1] == seen[-2] else None

    return str(eventually(steady, timeout=120, what=what))


def kubevisor(stack: Stack, namespace: str, *args: str) -> int:
    return cli.main([*args, "-n", namespace, "--kubeconfig", str(stack.plane.kubeconfig)])


def image_token(image: Path, raw: Path) -> str:
    """The token at the guest's offset in a qcow2 image, as the guest would read it."""
    span = f"count={guest_image.TOKEN_OFFSET + 64}"
    subprocess.run(
        ["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=1", span, f"if={image}", f"of={raw}"],
        check=True,
    )
    data = raw.read_bytes()[guest_image.TOKEN_OFFSET :]
    return data.rstrip(b"\0").decode().removeprefix("kubevisor-token ").strip()


def test_snapshot_of_a_running_vm_restores_into_the_stopped_vm(
    stack: Stack,
    tiny_guest: Any,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    stack.apply(namespace, vm("snap-src", tiny_guest))
    running = stack.wait_phase(namespace, "snap-src", "Running", timeout=120)
    uid, host = running["metadata"]["uid"], running["status"]["host"]
    log = stack.state_dirs[host] / "vms" / uid / "serial.log"
    first = token_after(log, 0, what="the guest's first token")

    started = time.monotonic()
    assert kubevisor(stack, namespace, "snapshot", "snap-src", "--name", "one", "--wait") == 0
    assert time.monotonic() - started < 60
    snap = stack.get("vmsnap", "one", namespace)
    status = snap["status"]
    assert (status["phase"], status["host"], status["vmUID"]) == ("Ready", host, uid)
    assert status["consistency"] == "CrashConsistent"  # the tiny guest runs no guest agent
    [disk] = status["disks"]
    image = stack.agent_options[host].state_dir / "images" / ".cache" / "sha256" / disk["sha256"]
    assert image.stat().st_size == disk["size"] == status["size"]
    assert image_token(image, tmp_path / "copy.raw") == first
    # It ran on: still Running, and the guest still reads its disk.
    assert stack.phase(namespace, "snap-src") == "Running"
    offset = log.stat().st_size
    assert token_after(log, offset, what="the guest reading on after the snapshot") == first

    # A restore is refused while the VM runs.
    assert kubevisor(stack, namespace, "restore", "snap-src", "one") != 0
    assert "run `kubevisor stop snap-src` first" in capsys.readouterr().err

    second = str(uuidlib.uuid4())
    write = (
        f"printf 'kubevisor-token %s\\n' {second} | dd of=/dev/vda bs=64 "
        f"seek={guest_image.TOKEN_OFFSET // 64} count=1 iflag=fullblock conv=notrunc,sync && sync"
    )
    uri = next(h.uri for h in stack.hosts if h.name == host)
    assert GuestShell(uri, uid).run(write).ok
    offset = log.stat().st_size
    assert token_after(log, offset, what="the guest reading its new token") == second

    assert kubevisor(stack, namespace, "stop", "snap-src") == 0
    stack.wait_phase(namespace, "snap-src", "Stopped", timeout=60)
    assert kubevisor(stack, namespace, "restore", "snap-src", "one") == 0
    offset = log.stat().st_size
    assert kubevisor(stack, namespace, "start", "snap-src") == 0
    again = stack.wait_phase(namespace, "snap-src", "Running", timeout=120)
    assert again["metadata"]["uid"] == uid
    assert token_after(log, offset, what="the restored token") == first
    selector = "involvedObject.name=snap-src,reason=Restored"
    listed = stack.kubectl(
        "get", "events", "-n", namespace, "--field-selector", selector, "-o", "json"
    )
    messages = [event["message"] for event in json.loads(listed.stdout)["items"]]
    assert messages == ["disk(s) data restored from snapshot one"]
