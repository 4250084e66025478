"""Bootable images of the tiny guest, and the dev stack's served one."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from harness import eventually, require
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.testbed import guest, images
from kubevisor.testbed.controlplane import free_ports


@pytest.fixture(scope="module")
def bootable(tiny_guest: guest.Guest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = images.missing_tools()
    require(not missing, what=f"{', '.join(missing)}", how=images.HOW_TO_INSTALL)
    return images.build_bootable_image(tiny_guest, tmp_path_factory.mktemp("image") / "g.qcow2")


def test_the_bootable_image_boots_the_guest_from_its_disk_alone(
    bootable: Path, tiny_guest: guest.Guest, tmp_path: Path
) -> None:
    disk = tmp_path / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(bootable), "-F", "qcow2", str(disk)],
        check=True,
    )
    before = hashlib.sha256(bootable.read_bytes()).hexdigest()
    serial = tmp_path / "serial.log"
    # No -kernel: SeaBIOS boots the disk's SYSLINUX, which loads the guest.
    qemu = subprocess.Popen(
        [
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-m",
            "128",
            "-display",
            "none",
            "-no-reboot",
            "-drive",
            f"file={disk},format=qcow2,if=virtio",
            "-serial",
            f"file:{serial}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        eventually(
            lambda: serial.exists() and guest.MARKER in serial.read_text(errors="replace"),
            timeout=120,
            what="the guest booted from the image to print its marker",
        )
    finally:
        qemu.kill()
        qemu.wait()
    assert f"{guest.MARKER} {tiny_guest.kernel_version}" in serial.read_text(errors="replace")
    # The token went into the overlay: the image itself is as built.
    assert hashlib.sha256(bootable.read_bytes()).hexdigest() == before


def test_the_served_image_matches_the_example_vms_source(
    tiny_guest: guest.Guest, tmp_path: Path
) -> None:
    require(not images.missing_tools(), what="image tools", how=images.HOW_TO_INSTALL)
    served = images.serve_demo_image(
        tmp_path, tiny_guest, port=free_ports(1)[0], log=tmp_path / "log"
    )
    try:

        def download() -> bytes | None:
            try:
                with urllib.request.urlopen(served.url, timeout=5) as reply:
                    return bytes(reply.read())
            except OSError:
                return None

        body = eventually(download, timeout=30, what="the image server to answer")
    finally:
        os.killpg(served.pid, signal.SIGTERM)
    vm = VirtualMachine.model_validate(yaml.safe_load(served.manifest.read_text()))
    (disk,) = vm.spec.disks
    assert disk.source is not None
    assert disk.source.url == served.url
    assert disk.source.sha256 == hashlib.sha256(body).hexdigest() == served.sha256
    assert body.startswith(b"QFI\xfb")  # a qcow2 header
