"""The tiny guest's builder: initramfs contents, caching, and its domain XML."""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
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
    for module in guest_image.MODULES:
        name = module.rsplit("/", 1)[-1]
        assert entries[f"lib/modules/{name}"][1][:4] == b"\x7fELF"  # uncompressed for insmod
    assert guest_image.DISK_TOKEN_FUNCTIONS in init.decode()
    power_mode, power, _ = entries["etc/acpi/PWRF/00000080"]
    assert power_mode & 0o111 and b"poweroff" in power


def test_init_loads_each_module_after_its_dependencies() -> None:
    names = [module.rsplit("/", 1)[-1].removesuffix(".ko") for module in guest_image.MODULES]
    loaded = guest_image.INIT.split("for m in ", 1)[1].split(";", 1)[0].split()
    assert [m.rsplit("/", 1)[-1].removesuffix(".ko") for m in loaded] == names
    # From the cloud kernel's modules.dep: virtio_blk needs virtio and virtio_ring, and
    # virtio_pci (which finds the disk) needs those and the two PCI transports.
    for module, needs in {
        "virtio": ["virtio_ring"],
        "virtio_pci": ["virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev"],
        "virtio_blk": ["virtio_ring", "virtio", "virtio_pci"],
    }.items():
        assert all(names.index(need) < names.index(module) for need in needs), module


TOKEN_LINE = b"kubevisor-token 0a1b2c3d-0000-4000-8000-123456789abc\n"


def disk_token_shell(disk: Path, command: str) -> subprocess.CompletedProcess[str]:
    """Runs the guest's token function `command` on `disk` with the busybox the guest gets."""
    script = f"{guest_image.DISK_TOKEN_FUNCTIONS}{command} {disk}"
    return subprocess.run(
        [str(guest_image.BUSYBOX), "sh", "-c", script], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("before", "kept"),
    [
        pytest.param(bytes(4096), False, id="blank-disk-gets-a-token"),
        pytest.param(os.urandom(4096), False, id="data-disk-gets-a-token"),
        pytest.param(
            bytes(512) + TOKEN_LINE + bytes(4096 - 512 - len(TOKEN_LINE)),
            True,
            id="token-of-an-earlier-boot-is-kept",
        ),
        pytest.param(
            bytes(512) + b"kubevisor-token not-a-uuid\n" + bytes(4096 - 512 - 27),
            False,
            id="malformed-token-is-replaced",
        ),
    ],
)
def test_disk_token_is_written_once_at_its_offset(
    tmp_path: Path, before: bytes, kept: bool
) -> None:
    require(guest_image.BUSYBOX.is_file(), what="busybox", how=guest_image.HOW_TO_INSTALL)
    disk = tmp_path / "disk"
    disk.write_bytes(before)

    assert disk_token_shell(disk, "keep_disk_token").returncode == 0
    first = disk_token_shell(disk, "disk_token")
    assert disk_token_shell(disk, "keep_disk_token").returncode == 0
    second = disk_token_shell(disk, "disk_token")

    assert first.returncode == 0 and first.stdout == second.stdout, (first, second)
    token = first.stdout.strip()
    assert len(token) == 36 and token.count("-") == 4, token
    if kept:
        assert token == "0a1b2c3d-0000-4000-8000-123456789abc"
    after = disk.read_bytes()
    start, end = guest_image.TOKEN_OFFSET, guest_image.TOKEN_OFFSET + 64
    assert after[start:end] == f"kubevisor-token {token}\n".encode().ljust(64, b"\0")
    assert (after[:start], after[end:]) == (before[:start], before[end:])


def test_a_disk_without_a_token_has_none(tmp_path: Path) -> None:
    require(guest_image.BUSYBOX.is_file(), what="busybox", how=guest_image.HOW_TO_INSTALL)
    disk = tmp_path / "disk"
    disk.write_bytes(os.urandom(4096))
    found = disk_token_shell(disk, "disk_token")
    assert (found.returncode, found.stdout) == (1, "")


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
    assert root.find("devices/disk") is None


def test_domain_xml_attaches_a_disk_as_vda(tmp_path: Path) -> None:
    guest = guest_image.Guest(
        kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.gz", cmdline="c", kernel_version="v"
    )
    root = ET.fromstring(
        guest.domain_xml(name="d", serial_log=tmp_path / "s.log", disk=tmp_path / "d.qcow2")
    )
    [disk] = root.findall("devices/disk")
    assert disk.get("device") == "disk"
    assert disk.find("driver").get("type") == "qcow2"
    assert disk.find("source").get("file") == str(tmp_path / "d.qcow2")
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}


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
