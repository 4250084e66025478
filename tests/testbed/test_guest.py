"""The tiny guest's builder: initramfs contents, caching, and its domain XML."""

from __future__ import annotations

import gzip
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import require
from kubevisor.testbed import guest as guest_image


def read_cpio(archive: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """name -> (mode, data, (rdev major, minor)) of a newc archive."""
    entries = {}
    offset = 0
    while True:
        header = archive[offset : offset + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmajor, rminor, namesize = (
            fields[1],
            fields[6],
            fields[9],
            fields[10],
            fields[11],
        )
        name = archive[offset + 110 : offset + 110 + namesize - 1].decode()
        offset = (offset + 110 + namesize + 3) & ~3
        data = archive[offset : offset + size]
        offset = (offset + size + 3) & ~3
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, data, (rmajor, rminor))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> guest_image.Guest:
    require(
        bool(guest_image.installed_kernels()) and guest_image.BUSYBOX.is_file(),
        what="the guest kernel and busybox",
        how=guest_image.HOW_TO_INSTALL,
    )
    return guest_image.build_guest(tmp_path_factory.mktemp("guest"))


def test_initramfs_holds_init_busybox_modules_and_console(built: guest_image.Guest) -> None:
    entries = read_cpio(gzip.decompress(built.initrd.read_bytes()))
    init_mode, init, _ = entries["init"]
    assert init_mode & 0o111
    assert guest_image.MARKER in init.decode()
    assert entries["bin/busybox"][1] == guest_image.BUSYBOX.read_bytes()
    console_mode, _, console_dev = entries["dev/console"]
    assert stat.S_ISCHR(console_mode) and console_dev == (5, 1)
    for module in ("evdev.ko", "button.ko"):
        assert entries[f"lib/modules/{module}"][1][:4] == b"\x7fELF"  # uncompressed for insmod
    power_mode, power, _ = entries["etc/acpi/PWRF/00000080"]
    assert power_mode & 0o111 and b"poweroff" in power


def test_kernel_is_the_installed_cloud_kernel(built: guest_image.Guest) -> None:
    installed = Path("/boot", f"vmlinuz-{built.kernel_version}")
    assert built.kernel.read_bytes() == installed.read_bytes()
    assert "console=ttyS0" in built.cmdline


def test_build_is_cached(built: guest_image.Guest) -> None:
    cache_dir = built.kernel.parent.parent
    mtime = built.initrd.stat().st_mtime_ns
    again = guest_image.build_guest(cache_dir)
    assert again == built
    assert again.initrd.stat().st_mtime_ns == mtime


def test_domain_xml_boots_the_guest_with_acpi_and_a_serial_log(tmp_path: Path) -> None:
    guest = guest_image.Guest(
        kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.gz", cmdline="c", kernel_version="v"
    )
    name = "a<b>&'\""  # must come out as text, never as markup
    root = ET.fromstring(
        guest.domain_xml(name=name, serial_log=tmp_path / "serial.log", uuid="u-1")
    )
    assert root.get("type") == "qemu"
    assert root.findtext("name") == name
    assert root.findtext("uuid") == "u-1"
    assert root.find("features/acpi") is not None
    assert root.findtext("os/kernel") == str(tmp_path / "vmlinuz")
    serial = root.find("devices/serial")
    assert serial is not None and serial.get("type") == "file"
    source = serial.find("source")
    assert source is not None and source.get("path") == str(tmp_path / "serial.log")


@pytest.mark.parametrize(
    ("versions", "newest"),
    [
        pytest.param(
            ["6.1.0-9-cloud-amd64", "6.1.0-10-cloud-amd64"], "6.1.0-10-cloud-amd64", id="numeric"
        ),
        pytest.param(["6.1.0-56-cloud-amd64"], "6.1.0-56-cloud-amd64", id="single"),
    ],
)
def test_newest_kernel_sorts_numerically(versions: list[str], newest: str) -> None:
    assert sorted(versions, key=guest_image._version_key)[-1] == newest
