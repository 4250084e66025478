"""Disks from HTTP images end to end: the real stack's agents download a disk's `source`
from an HTTP server on 127.0.0.1 into their hosts' caches, report the pull in the VM's
status, survive the server going away, and fetch the image on a migration's target.

Each test builds an image of its own (tests/images.py), so its digest is in no host's cache
when the test starts. The guest keeps a token on its disk and prints what it reads there
(testbed/guest.py), so a test can tell what the guest's disk holds.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from harness import eventually
from images import ImageServer, SourceImage, build_image
from kubevisor.api import quantity
from kubevisor.testbed import guest as guest_image
from kubevisor.testbed.guest import Guest
from stacks import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]

PIN_LABEL = "e2e-images"
SLOW = 64 * 1024  # bytes per second: a download of the ~4 MiB image takes about a minute
DISK_TOKEN = re.compile(rf"^{guest_image.DISK_TOKEN_PREFIX}([0-9a-f-]{{36}})\s*$", re.MULTILINE)


@pytest.fixture
def image(tmp_path: Path) -> SourceImage:
    return build_image(tmp_path / "image")


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    with ImageServer() as server:
        yield server


@pytest.fixture
def pinned_host(stack: Stack) -> Iterator[str]:
    """The first shared host, labelled so that VMs can select it. Ask for it before
    `namespace`: the namespace's VMs are deleted first."""
    host = stack.hosts[0].name
    stack.kubectl("label", "hvh", host, f"{PIN_LABEL}=pinned", "--overwrite")
    try:
        yield host
    finally:
        stack.kubectl("label", "hvh", host, f"{PIN_LABEL}-", check=False)


def vm_from_source(
    name: str, guest: Guest, *, url: str, sha256: str, pinned: bool = False
) -> dict[str, Any]:
    """A VM booting the tiny guest with one disk, `root`, on the image at `url`."""
    spec: dict[str, Any] = {
        "memory": {"size": "128Mi"},
        "boot": {
            "kernel": str(guest.kernel),
            "initrd": str(guest.initrd),
            "cmdline": guest.cmdline,
        },
        "disks": [{"name": "root", "source": {"url": url, "sha256": sha256, "format": "qcow2"}}],
    }
    if pinned:
        spec["placement"] = {"hostSelector": {PIN_LABEL: "pinned"}}
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": spec,
    }


def migration_job(name: str, vm_name: str, target: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "MigrationJob",
        "metadata": {"name": name},
        "spec": {"vm": vm_name, "targetHost": target},
    }


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


def image_pulling(obj: dict[str, Any] | None, reason: str) -> dict[str, Any] | None:
    """`obj` when its ImagePulling condition has `reason`."""
    found = condition(obj, "ImagePulling") if obj else None
    return obj if found is not None and found["reason"] == reason else None


def pulling_with_progress(stack: Stack, namespace: str, name: str) -> dict[str, Any] | None:
    """The VM once its status shows its download under way, some bytes received."""
    vm = image_pulling(stack.get("vm", name, namespace), "Pulling")
    pulls = (vm or {}).get("status", {}).get("imagePulls") or []
    return vm if pulls and pulls[0].get("receivedBytes", 0) > 0 else None


def cache_dir(stack: Stack, host: str) -> Path:
    """Where the host's agent keeps downloaded images (its --image-dir/.cache/sha256)."""
    return Path(stack.state_dirs[host]) / "images" / ".cache" / "sha256"


def partial_files(directory: Path) -> list[str]:
    return (
        [p.name for p in directory.iterdir() if ".partial" in p.name] if directory.is_dir() else []
    )


def overlay(stack: Stack, host: str, uid: str) -> Path:
    return Path(stack.state_dirs[host]) / "vms" / uid / "disk-root.qcow2"


def qemu_img(*args: str) -> Any:
    """qemu-img's JSON answer; -U: the running guest holds the file's lock."""
    done = subprocess.run(
        ["qemu-img", *args, "-U", "--output=json"], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout)


def disk_tokens(stack: Stack, host: str, uid: str) -> list[str]:
    """The tokens the guest read from its disk, as printed on its serial console on `host`."""
    log = Path(stack.state_dirs[host]) / "vms" / uid / "serial.log"
    return DISK_TOKEN.findall(log.read_text(errors="replace")) if log.exists() else []


def timestamp(value: str) -> float:
    """Seconds since the epoch of an API timestamp (RFC 3339)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_a_vm_pulls_its_image_with_progress_in_status_then_boots_from_it(
    stack: Stack,
    tiny_guest: Guest,
    image: SourceImage,
    image_server: ImageServer,
    pinned_host: str,
    namespace: str,
) -> None:
    served = image.qcow2
    url = image_server.serve("/a/root.qcow2", served.path)
    image_server.throttle("/a/root.qcow2", SLOW)
    stack.apply(
        namespace, vm_from_source("puller", tiny_guest, url=url, sha256=served.sha256, pinned=True)
    )

    pulling = eventually(
        lambda: pulling_with_progress(stack, namespace, "puller"),
        timeout=90,
        what="the VM's status showing its image download under way",
    )
    status = pulling["status"]
    assert (status["phase"], status["host"]) == ("Starting", pinned_host)
    pulling_condition = condition(pulling, "ImagePulling")
    assert pulling_condition is not None and pulling_condition["status"] == "True"
    message = pulling_condition["message"]
    assert re.match(rf"disk root: [\d.]+ MiB of [\d.]+ MiB \(\d+%\) from {re.escape(url)}", message)
    [pull] = status["imagePulls"]
    assert (pull["disk"], pull["url"], pull["totalBytes"]) == ("root", url, served.size)
    assert 0 < pull["receivedBytes"] < served.size
    ready = condition(pulling, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "ImagePulling")

    image_server.throttle("/a/root.qcow2", None)
    running = stack.wait_phase(namespace, "puller", "Running", timeout=120)
    pulled = condition(running, "ImagePulling")
    assert pulled is not None and (pulled["status"], pulled["reason"]) == ("False", "Pulled")
    assert not running["status"].get("imagePulls")
    assert len(image_server.gets("/a/root.qcow2")) == 1
    cached = cache_dir(stack, pinned_host) / served.sha256
    assert cached.read_bytes() == served.path.read_bytes()
    uid = running["metadata"]["uid"]
    assert qemu_img("info", str(overlay(stack, pinned_host, uid)))["backing-filename"] == str(
        cached
    )
    # The guest has the disk: it wrote its token there and reads it back.
    eventually(
        lambda: disk_tokens(stack, pinned_host, uid) or None,
        timeout=60,
        what="the guest printing the token on its disk",
    )


def test_a_second_vm_on_the_host_uses_the_cached_image(
    stack: Stack,
    tiny_guest: Guest,
    image: SourceImage,
    image_server: ImageServer,
    pinned_host: str,
    namespace: str,
) -> None:
    served = image.qcow2
    url = image_server.serve("/b/root.qcow2", served.path)
    first = vm_from_source("first", tiny_guest, url=url, sha256=served.sha256, pinned=True)
    stack.apply(namespace, first)
    stack.wait_phase(namespace, "first", "Running", timeout=120)
    second = vm_from_source("second", tiny_guest, url=url, sha256=served.sha256, pinned=True)
    stack.apply(namespace, second)
    running = stack.wait_phase(namespace, "second", "Running", timeout=120)

    assert running["status"]["host"] == pinned_host
    assert len(image_server.gets("/b/root.qcow2")) == 1
    cached = cache_dir(stack, pinned_host) / served.sha256
    for name in ("first", "second"):
        uid = stack.get("vm", name, namespace)["metadata"]["uid"]
        info = qemu_img("info", str(overlay(stack, pinned_host, uid)))
        assert info["backing-filename"] == str(cached), name

    def listed() -> dict[str, Any] | None:
        images = (stack.get("hvh", pinned_host).get("status") or {}).get("images") or []
        return next((i for i in images if i["sha256"] == served.sha256), None)

    entry = eventually(
        lambda: e if (e := listed()) and e.get("inUse") == 2 else None,
        timeout=30,
        what=f"{pinned_host} listing the image, used by both VMs' disks (last: {listed()})",
    )
    assert quantity.to_bytes(str(entry["size"])) == served.size
    assert not entry.get("shared")


def test_a_wrong_sha256_fails_the_vm_and_leaves_nothing_in_the_cache(
    stack: Stack, tiny_guest: Guest, image: SourceImage, image_server: ImageServer, namespace: str
) -> None:
    served = image.qcow2
    url = image_server.serve("/c/root.qcow2", served.path)
    wrong = hashlib.sha256(b"some other image").hexdigest()
    stack.apply(namespace, vm_from_source("mismatch", tiny_guest, url=url, sha256=wrong))

    failed = stack.wait_phase(namespace, "mismatch", "Failed", timeout=90)
    stalled = condition(failed, "Stalled")
    assert stalled is not None and stalled["status"] == "True"
    pulling = condition(failed, "ImagePulling")
    assert pulling is not None
    assert (pulling["status"], pulling["reason"]) == ("False", "ChecksumMismatch")
    assert url in pulling["message"], pulling["message"]
    assert wrong in pulling["message"] and served.sha256 in pulling["message"], pulling["message"]
    assert image_server.gets("/c/root.qcow2")
    cache = cache_dir(stack, failed["status"]["host"])
    assert not (cache / wrong).exists() and not (cache / served.sha256).exists()
    assert partial_files(cache) == []


def test_a_download_cut_off_is_retried_until_the_server_is_back(
    stack: Stack, tiny_guest: Guest, image: SourceImage, image_server: ImageServer, namespace: str
) -> None:
    served = image.qcow2
    url = image_server.serve("/d/root.qcow2", served.path)
    image_server.throttle("/d/root.qcow2", SLOW)
    stack.apply(namespace, vm_from_source("patient", tiny_guest, url=url, sha256=served.sha256))
    eventually(
        lambda: any(g.sent > 0 for g in image_server.gets("/d/root.qcow2")),
        timeout=90,
        what="the server sending the image",
    )
    pulling = eventually(
        lambda: pulling_with_progress(stack, namespace, "patient"),
        timeout=30,
        what="the VM's status showing progress",
    )
    cache = cache_dir(stack, pulling["status"]["host"])

    image_server.stop()
    failed = eventually(
        lambda: image_pulling(stack.get("vm", "patient", namespace), "DownloadFailed"),
        timeout=60,
        what="ImagePulling reason DownloadFailed",
    )
    assert failed["status"]["phase"] == "Starting"
    retried = condition(failed, "ImagePulling")
    assert retried is not None and retried["status"] == "True"
    assert url in retried["message"] and "retry" in retried["message"], retried["message"]
    eventually(
        lambda: partial_files(cache) == [],
        timeout=30,
        what=f"no partial download in {cache}",
    )
    assert not (cache / served.sha256).exists()

    image_server.throttle("/d/root.qcow2", None)
    image_server.start()  # the same port: the VM's URL works again
    running = stack.wait_phase(namespace, "patient", "Running", timeout=180)
    pulled = condition(running, "ImagePulling")
    assert pulled is not None and (pulled["status"], pulled["reason"]) == ("False", "Pulled")
    assert not running["status"].get("imagePulls")
    gets = image_server.gets("/d/root.qcow2")
    assert len(gets) >= 2 and gets[-1].finished is not None
    assert (cache / served.sha256).read_bytes() == served.path.read_bytes()
    assert partial_files(cache) == []


def test_a_migration_target_fetches_the_image_and_the_guest_keeps_its_disk(
    stack: Stack, tiny_guest: Guest, image: SourceImage, image_server: ImageServer, namespace: str
) -> None:
    served = image.qcow2
    path = "/e/root.qcow2"
    url = image_server.serve(path, served.path)
    stack.apply(namespace, vm_from_source("traveller", tiny_guest, url=url, sha256=served.sha256))
    running = stack.wait_phase(namespace, "traveller", "Running", timeout=120)
    uid, source = running["metadata"]["uid"], running["status"]["host"]
    target = next(h.name for h in stack.hosts if h.name != source)
    assert not (cache_dir(stack, target) / served.sha256).exists()
    before = eventually(
        lambda: disk_tokens(stack, source, uid) or None,
        timeout=60,
        what="the guest printing its disk token on the source",
    )[-1]

    # Slowed down, the target's download shows whether the transfer waits for it.
    image_server.throttle(path, SLOW)
    stack.apply(namespace, migration_job("travel", "traveller", target))
    fetch = eventually(
        lambda: g[1] if len(g := image_server.gets(path)) == 2 and g[1].sent >= 4 * SLOW else None,
        timeout=90,
        what="the target downloading the image (a second GET, a few seconds into it)",
    )
    job = stack.get("migrationjob", "travel", namespace)
    assert job["status"]["phase"] == "Preparing", job["status"]
    assert "transfer" not in job["status"] and "startTime" not in job["status"], job["status"]
    assert stack.get("vm", "traveller", namespace)["status"]["host"] == source

    image_server.throttle(path, None)
    done = eventually(
        lambda: (
            j
            if (j := stack.get("migrationjob", "travel", namespace))["status"].get("phase")
            in ("Succeeded", "Failed", "Cancelled")
            else None
        ),
        timeout=180,
        what="the migration to end",
    )
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert fetch.finished is not None
    # startTime may be whole seconds: the download ended before the second it names ended.
    assert fetch.finished < timestamp(done["status"]["startTime"]) + 1.0
    assert len(image_server.gets(path)) == 2
    cached = cache_dir(stack, target) / served.sha256
    assert cached.read_bytes() == served.path.read_bytes()
    eventually(
        lambda: (
            (v := stack.get("vm", "traveller", namespace))["status"].get("phase") == "Running"
            and v["status"].get("host") == target
        ),
        timeout=60,
        what="the VM Running on the target",
    )

    # The guest's overlay came along: on the target it is backed by the target's cached
    # image and holds what the guest wrote (the token's cluster, allocated in the overlay
    # itself, depth 0), and the guest reads its token from it after dropping its caches.
    disk = overlay(stack, target, uid)
    assert qemu_img("info", str(disk))["backing-filename"] == str(cached)
    extents = qemu_img("map", str(disk))
    assert any(
        e["depth"] == 0
        and e["data"]
        and e["start"] <= guest_image.TOKEN_OFFSET < e["start"] + e["length"]
        for e in extents
    ), extents
    after = eventually(
        lambda: disk_tokens(stack, target, uid) or None,
        timeout=60,
        what="the guest printing its disk token on the target",
    )
    assert set(after) == {before}, (before, after)
