"""The tiny guest's console commands and web page, on a real libvirtd + QEMU (TCG) host.

No network between test and guest: everything goes through the serial console, and the
guest's httpd is reached from inside the guest (loopback). Real packets between guests are
in test_netns_hosts.py.
"""

from __future__ import annotations

import re
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from harness import eventually, require
from kubevisor.testbed import guest as guest_image
from kubevisor.testbed import hosts
from kubevisor.testbed.guestshell import GuestCommandError, GuestShell

pytestmark = pytest.mark.libvirtd

BOOT_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[hosts.LocalHost]:
    missing = hosts.missing_prerequisites()
    require(not missing, what=f"local libvirtd hosts (missing {missing})", how=hosts.HOW_TO_INSTALL)
    state_dir = tmp_path_factory.mktemp("hosts")
    try:
        yield hosts.start_hosts(1, state_dir=state_dir)[0]
    finally:
        hosts.stop_hosts(state_dir)


@pytest.fixture(scope="module")
def booted(
    host: hosts.LocalHost, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[libvirt.virDomain, Path]]:
    require(
        bool(guest_image.installed_kernels()) and guest_image.BUSYBOX.is_file(),
        what="the guest kernel and busybox",
        how=guest_image.HOW_TO_INSTALL,
    )
    tmp = tmp_path_factory.mktemp("guest")
    tiny = guest_image.build_guest(tmp / "cache")
    serial = tmp / "serial.log"
    uuid = str(uuidlib.uuid4())
    conn = libvirt.open(host.uri)
    try:
        domain = conn.defineXML(
            tiny.domain_xml(name="shell", uuid=uuid, serial_log=serial, console=True)
        )
        domain.create()
        eventually(
            lambda: serial.exists() and guest_image.MARKER in serial.read_text(errors="replace"),
            timeout=BOOT_TIMEOUT,
            what=f"{guest_image.MARKER} in {serial}",
        )
        yield domain, serial
        if domain.isActive():
            domain.destroy()
        domain.undefine()
    finally:
        conn.close()


def test_command_output_and_exit_code_come_back(
    host: hosts.LocalHost, booted: tuple[libvirt.virDomain, Path]
) -> None:
    domain, serial = booted
    shell = GuestShell(host.uri, domain.UUIDString())
    started = time.monotonic()
    result = shell.run('echo "it\'s"; uname -r >&2; exit 7')
    took = time.monotonic() - started
    assert result == guest_image.CommandResult(7, f"it's\n{domain_kernel(serial)}")
    assert not shell.run("false").ok
    # The echo is off: a command line appears once (the guest's own echo), never char by char.
    assert serial.read_text(errors="replace").count(guest_image.RUN_PREFIX) >= 2
    print(f"one command round trip: {took:.2f}s")


def domain_kernel(serial: Path) -> str:
    found = re.search(rf"{guest_image.MARKER} (\S+)", serial.read_text(errors="replace"))
    assert found, "no marker line"
    return found.group(1)


def test_page_says_who_the_guest_is(
    host: hosts.LocalHost, booted: tuple[libvirt.virDomain, Path]
) -> None:
    domain, _ = booted
    shell = GuestShell(host.uri, domain.UUIDString())
    fetched = shell.fetch("http://127.0.0.1/")
    assert fetched.ok, fetched
    page = guest_image.parse_page(fetched.output)
    assert page.uuid == domain.UUIDString()
    assert page.peer == "127.0.0.1"
    assert page.interfaces == {}  # this guest has no NIC
    assert shell.fetch("http://127.0.0.1/cgi-bin/peer").output.strip() == "127.0.0.1"
    assert shell.ping("127.0.0.1").ok
    assert shell.run("nc -h 2>&1 | grep -q Usage").ok


def test_started_command_runs_while_the_test_does_other_things(
    host: hosts.LocalHost, booted: tuple[libvirt.virDomain, Path]
) -> None:
    domain, _ = booted
    shell = GuestShell(host.uri, domain.UUIDString())
    gate = f"/tmp/gate-{uuidlib.uuid4().hex[:6]}"
    started = shell.start(f"while [ ! -e {gate} ]; do sleep 0.1; done; echo passed")
    # It waits for the gate: its result is not there yet, and other commands still run.
    with pytest.raises(GuestCommandError, match="still running"):
        shell.result(started, timeout=1.0)
    assert shell.run(f"touch {gate}").ok
    assert shell.result(started) == guest_image.CommandResult(0, "passed")


def test_guest_still_counts_and_powers_off_on_acpi(
    booted: tuple[libvirt.virDomain, Path],
) -> None:
    domain, serial = booted
    counters = re.findall(
        rf"^{guest_image.COUNTER_PREFIX}(\d+)", serial.read_text(errors="replace"), re.M
    )
    assert counters, "no counter lines"
    domain.shutdown()
    eventually(
        lambda: guest_image.POWEROFF_MARKER in serial.read_text(errors="replace"),
        timeout=60,
        what="the guest to power off on the ACPI button",
    )
    eventually(lambda: not domain.isActive(), timeout=30, what="the domain to stop")
