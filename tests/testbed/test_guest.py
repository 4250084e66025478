"""The tiny guest's builder: initramfs contents, caching, and its domain XML."""

from __future__ import annotations

import gzip
import os
import shutil
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
        "net_failover": ["failover"],
        "virtio_net": ["virtio_ring", "virtio", "virtio_pci", "failover", "net_failover"],
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


def test_modules_come_after_what_modules_dep_says_they_need(built: guest_image.Guest) -> None:
    """The installed kernel's own modules.dep, not a copy: a kernel update that adds a
    dependency fails here rather than in a guest that boots without its NIC."""
    dep = Path("/lib/modules", built.kernel_version, "modules.dep").read_text()
    needs = {}
    for line in dep.splitlines():
        module, _, deps = line.partition(":")
        needs[module.removesuffix(".xz").removesuffix(".zst")] = [
            d.removesuffix(".xz").removesuffix(".zst") for d in deps.split()
        ]
    order = list(guest_image.MODULES)
    for position, module in enumerate(order):
        assert module in needs, f"{module} is not in modules.dep"
        missing = [d for d in needs[module] if d not in order[:position]]
        assert not missing, f"{module} is loaded before {missing}"


def busybox_sh(script: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run `script` with the busybox the guest gets, its applets first on PATH."""
    require(guest_image.BUSYBOX.is_file(), what="busybox", how=guest_image.HOW_TO_INSTALL)
    return subprocess.run(
        [str(guest_image.BUSYBOX), "sh", "-c", script],
        capture_output=True,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


def applets(tmp_path: Path, *names: str) -> Path:
    """A directory of busybox applet links, so scripts run busybox's tools, not the host's."""
    require(guest_image.BUSYBOX.is_file(), what="busybox", how=guest_image.HOW_TO_INSTALL)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in names:
        (bin_dir / name).symlink_to(guest_image.BUSYBOX)
    return bin_dir


def test_command_service_runs_each_id_once_and_echoes_every_line(tmp_path: Path) -> None:
    script = "echo one; echo two >&2; printf 'no newline'; exit 3"
    line = guest_image.command_line("abc1", script).decode()
    lines = [
        "typed by a person\r\n",  # a terminal sends CR; the echo comes back without it
        line,
        line,  # sent again by a sender that saw no echo yet: must not run twice
        "kubevisor-run Bad! ZWNobyBubw==\n",  # an ID that is not [0-9a-z]: ignored
        guest_image.command_line("abc2", "").decode(),
    ]
    (tmp_path / "input").write_text("".join(lines))
    bin_dir = applets(tmp_path, "base64", "mkdir", "sh", "cat")
    done = busybox_sh(
        f"{guest_image.COMMAND_FUNCTIONS}serve_commands < {tmp_path}/input; wait",
        env={"PATH": str(bin_dir), "KV": str(tmp_path / "kv")},
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.splitlines()[0] == "typed by a person"
    assert out.count(line) == 2
    assert "kubevisor-run Bad! ZWNobyBubw==" in out
    assert guest_image.command_result(out, "abc1") == guest_image.CommandResult(
        3, "one\ntwo\nno newline"
    )
    assert out.count("kubevisor-exit abc1 ") == 1
    assert guest_image.command_result(out, "abc2") == guest_image.CommandResult(0, "")
    assert (tmp_path / "kv" / "abc1.rc").read_text() == "3\n"
    assert not list((tmp_path / "kv").glob("Bad*"))


@pytest.mark.parametrize(
    ("command_id", "command", "error"),
    [
        pytest.param("ABC", "true", "lowercase letters and digits", id="uppercase-id"),
        pytest.param("a b", "true", "lowercase letters and digits", id="space-in-id"),
        pytest.param("", "true", "lowercase letters and digits", id="empty-id"),
        pytest.param("a1", "x" * 3000, "at most 4000", id="line-too-long-for-the-tty"),
    ],
)
def test_command_line_refuses(command_id: str, command: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        guest_image.command_line(command_id, command)


@pytest.mark.parametrize(
    ("console", "expected"),
    [
        pytest.param("kubevisor-out a1 x\r\n", None, id="no-exit-line-yet"),
        pytest.param(
            "kubevisor-out a1 x\r\nkubevisor-counter 5\r\nkubevisor-out a2 other\r\n"
            "kubevisor-out a1  indented\r\nkubevisor-exit a1 0\r\n",
            guest_image.CommandResult(0, "x\n indented"),
            id="other-lines-between",
        ),
        pytest.param(
            "ter 3\r\nkubevisor-exit a12 1\r\nkubevisor-exit a1 2\r\n",
            guest_image.CommandResult(2, ""),
            id="partial-first-line-and-a-longer-id",
        ),
        pytest.param("kubevisor-exit a1 \r\n", None, id="exit-line-cut-short"),
    ],
)
def test_command_result_reads_its_own_lines(
    console: str, expected: guest_image.CommandResult | None
) -> None:
    assert guest_image.command_result(console, "a1") == expected


def test_command_is_acknowledged_by_its_echo() -> None:
    line = guest_image.command_line("a1", "true").decode()
    assert not guest_image.command_acknowledged("kubevisor-counter 1\r\n", "a1")
    assert not guest_image.command_acknowledged(line.replace("a1", "a11"), "a1")
    assert guest_image.command_acknowledged(f"x\r\n{line.rstrip()}\r\n", "a1")


@pytest.mark.netns
def test_udhcpc_script_configures_the_lease_once(tmp_path: Path) -> None:
    """The guest's udhcpc script, with busybox's ip, on a veth in a network namespace of
    its own: address, default route, MTU and the console line; a renewal changes
    nothing."""
    require(
        os.geteuid() == 0 and shutil.which("unshare") is not None,
        what="a network namespace (root and util-linux unshare)",
        how="run as root",
    )
    bin_dir = applets(tmp_path, "ip", "ipcalc", "cut", "grep", "cat", "hostname", "sh")
    (tmp_path / "script").write_text(guest_image.UDHCPC_SCRIPT)
    (tmp_path / "script").chmod(0o755)
    lease = "interface=eth0 ip=10.9.0.5 subnet=255.255.255.0 router=10.9.0.1"
    # /sys stays the machine's, so the script's MAC (read from /sys) is not eth0's here:
    # the console line is checked for its shape, the addresses for their values.
    done = subprocess.run(
        [
            shutil.which("unshare") or "unshare",
            "--net",
            str(guest_image.BUSYBOX),
            "sh",
            "-c",
            f"""set -e
ip link add eth0 type veth peer name peer0
ip link set eth0 up
{lease} mask=24 mtu=1450 {tmp_path}/script bound
{lease} {tmp_path}/script renew
ip -4 -o addr show dev eth0
ip route show
ip -o link show dev eth0
""",
        ],
        capture_output=True,
        text=True,
        env={"PATH": str(bin_dir)},
    )
    assert done.returncode == 0, done.stderr
    addresses = [line for line in done.stdout.splitlines() if " inet " in line]
    assert len(addresses) == 1 and " inet 10.9.0.5/24 " in addresses[0], done.stdout
    assert "default via 10.9.0.1 dev eth0" in done.stdout
    assert " mtu 1450 " in done.stdout  # the overlay's, from the lease


@pytest.mark.parametrize(
    ("remote", "peer"),
    [
        pytest.param("[::ffff:10.9.0.7]", "10.9.0.7", id="ipv4-on-the-dual-stack-socket"),
        pytest.param("10.9.0.7", "10.9.0.7", id="plain-ipv4"),
        pytest.param("[fd00::7]", "fd00::7", id="ipv6"),
    ],
)
def test_index_page_says_who_asked(tmp_path: Path, remote: str, peer: str) -> None:
    bin_dir = applets(tmp_path, "ip", "sed", "cat", "hostname", "printf")
    done = subprocess.run(  # bytes: text mode would turn the header's CRLF into LF
        [str(guest_image.BUSYBOX), "sh", "-c", guest_image.CGI_INDEX],
        capture_output=True,
        env={"PATH": str(bin_dir), "REMOTE_ADDR": remote},
    )
    assert done.returncode == 0, done.stderr
    header, _, body = done.stdout.decode().partition("\r\n\r\n")
    assert header == "Content-Type: text/plain"
    page = guest_image.parse_page(body)
    assert page.peer == peer
    assert (
        page.hostname == subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    )


def test_parse_page_reads_interfaces_and_refuses_other_pages() -> None:
    page = guest_image.parse_page(
        "hostname blue-1\nuuid 0a1b\ninterface eth0 52:54:00:00:00:01 10.9.0.5/24\n"
        "interface eth1 52:54:00:00:00:02\npeer 10.9.0.7\n"
    )
    assert page == guest_image.GuestPage(
        hostname="blue-1",
        uuid="0a1b",
        interfaces={
            "eth0": ("52:54:00:00:00:01", ("10.9.0.5/24",)),
            "eth1": ("52:54:00:00:00:02", ()),
        },
        peer="10.9.0.7",
    )
    with pytest.raises(ValueError, match="not the guest's page"):
        guest_image.parse_page("<html>It works!</html>")


def test_net_events_are_the_console_lines_of_udhcpc() -> None:
    console = (
        "kubevisor-counter 1\r\nkubevisor-net bound eth0 52:54:00:00:00:01 10.9.0.5/24\r\n"
        "kubevisor-net bound eth0 oops\r\nkubevisor-net renew eth0 52:54:00:00:00:01 "
        "10.9.0.5/24\r\n"
    )
    assert guest_image.net_events(console) == [
        guest_image.NetEvent("bound", "eth0", "52:54:00:00:00:01", "10.9.0.5/24"),
        guest_image.NetEvent("renew", "eth0", "52:54:00:00:00:01", "10.9.0.5/24"),
    ]


def test_domain_xml_adds_virtio_nics_on_bridges_and_a_pty_console(tmp_path: Path) -> None:
    guest = guest_image.Guest(
        kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.gz", cmdline="c", kernel_version="v"
    )
    root = ET.fromstring(
        guest.domain_xml(
            name="n",
            serial_log=tmp_path / "s.log",
            nics=[
                guest_image.Nic(bridge="br-a", mac="52:54:00:00:00:01"),
                guest_image.Nic(bridge="br-b"),
            ],
            console=True,
        )
    )
    first, second = root.findall("devices/interface")
    assert first.get("type") == "bridge"
    assert first.find("source").get("bridge") == "br-a"
    assert first.find("mac").get("address") == "52:54:00:00:00:01"
    assert first.find("model").get("type") == "virtio"
    assert second.find("source").get("bridge") == "br-b" and second.find("mac") is None
    serial = root.find("devices/serial")
    assert serial is not None and serial.get("type") == "pty"
    assert serial.find("log").attrib == {"file": str(tmp_path / "s.log"), "append": "on"}
    assert root.find("devices/console").get("type") == "pty"
