"""The libvirt driver against a real libvirtd running QEMU, booting the testbed's tiny guest.

One local host (kubevisor.testbed.hosts) for the module; guests run under TCG.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import guestlog
from drivers.domains import events_until, expect_state
from harness import require
from kubevisor.drivers import base
from kubevisor.drivers.libvirt import LibvirtHypervisor
from kubevisor.testbed import guest as guest_image
from kubevisor.testbed import hosts

pytestmark = pytest.mark.libvirtd
S = base.DomainState
E = base.EventKind
BOOT_TIMEOUT = 90.0  # TCG on a loaded 2-core CI machine; it boots in about 3 s when idle


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[hosts.LocalHost, Path]]:
    missing = hosts.missing_prerequisites()
    require(
        not missing, what=f"a local libvirtd host (missing {missing})", how=hosts.HOW_TO_INSTALL
    )
    state_dir = tmp_path_factory.mktemp("hosts")
    [started] = hosts.start_hosts(1, state_dir=state_dir)
    yield started, state_dir
    hosts.stop_hosts(state_dir)


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> guest_image.Guest:
    require(
        bool(guest_image.installed_kernels()) and guest_image.BUSYBOX.is_file(),
        what="the guest kernel and busybox",
        how=guest_image.HOW_TO_INSTALL,
    )
    return guest_image.build_guest(tmp_path_factory.mktemp("guest"))


def test_guest_boots_pauses_resumes_and_shuts_down(
    host: tuple[hosts.LocalHost, Path], guest: guest_image.Guest, tmp_path: Path
) -> None:
    local, _ = host
    uuid = str(uuidlib.uuid4())
    serial = tmp_path / "serial.log"
    xml = guest.domain_xml(name=f"driver-{uuid[:8]}", uuid=uuid, serial_log=serial)

    async def main() -> None:
        async with LibvirtHypervisor(local.uri) as hypervisor:
            events = hypervisor.events()
            await hypervisor.define(xml)
            await events_until(events, uuid, E.DEFINED, "added")
            try:
                await hypervisor.start(uuid)
                await events_until(events, uuid, E.STARTED, "booted")
                await expect_state(hypervisor, uuid, S.RUNNING, "booted")
                await guestlog.line(serial, guest_image.MARKER, timeout=BOOT_TIMEOUT)
                counted = await guestlog.counter_above(
                    serial, await guestlog.counter_above(serial, 0)
                )

                await hypervisor.suspend(uuid)
                await events_until(events, uuid, E.SUSPENDED, "paused")
                await expect_state(hypervisor, uuid, S.PAUSED, "user")

                await hypervisor.resume(uuid)
                await events_until(events, uuid, E.RESUMED, "unpaused")
                await expect_state(hypervisor, uuid, S.RUNNING, "unpaused")
                await guestlog.counter_above(serial, counted)

                outcome = await hypervisor.shutdown(uuid, timeout=BOOT_TIMEOUT)
                assert outcome is base.ShutdownOutcome.GRACEFUL
                await events_until(events, uuid, E.STOPPED, "shutdown")
                await expect_state(hypervisor, uuid, S.SHUTOFF, "shutdown")
                await guestlog.line(serial, guest_image.POWEROFF_MARKER, timeout=5)

                await hypervisor.start(uuid)
                await events_until(events, uuid, E.STARTED, "booted")
                await hypervisor.destroy(uuid)
                await events_until(events, uuid, E.STOPPED, "destroyed")
                await expect_state(hypervisor, uuid, S.SHUTOFF, "destroyed")
            finally:
                await hypervisor.undefine(uuid)
            await events_until(events, uuid, E.UNDEFINED, "removed")
            assert uuid not in {d.uuid for d in await hypervisor.list_domains()}

    asyncio.run(main())


def disk_bytes(disk: Path, offset: int, length: int) -> bytes:
    """`length` bytes at `offset` of what the guest sees on `disk` (a qcow2 file)."""
    out = disk.with_suffix(".raw")
    # From the start: qemu-img 7.2 dd fails skip= ("cannot skip") and still exits 0.
    span = ["bs=1", f"count={offset + length}", f"if={disk}", f"of={out}"]
    subprocess.run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", *span], check=True)
    return out.read_bytes()[offset:]


def test_guest_keeps_a_token_on_its_disk_across_boots(
    host: tuple[hosts.LocalHost, Path], guest: guest_image.Guest, tmp_path: Path
) -> None:
    local, _ = host
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    uuid = str(uuidlib.uuid4())
    serial = tmp_path / "serial.log"
    xml = guest.domain_xml(name=f"driver-{uuid[:8]}", uuid=uuid, serial_log=serial, disk=disk)
    token = rf"^{guest_image.DISK_TOKEN_PREFIX}([0-9a-f-]{{36}})\s*$"

    async def boot_and_read_token(hypervisor: LibvirtHypervisor) -> str:
        serial.write_text("")  # so the token read is this boot's
        await hypervisor.start(uuid)
        found = await guestlog.line(serial, token, timeout=BOOT_TIMEOUT)
        await hypervisor.destroy(uuid)
        return found.group(1)

    async def main() -> tuple[str, str]:
        async with LibvirtHypervisor(local.uri) as hypervisor:
            await hypervisor.define(xml)
            try:
                return await boot_and_read_token(hypervisor), await boot_and_read_token(hypervisor)
            finally:
                await hypervisor.undefine(uuid)

    first, second = asyncio.run(main())
    assert first == second
    on_disk = disk_bytes(disk, guest_image.TOKEN_OFFSET, 64)
    assert on_disk.rstrip(b"\0") == f"kubevisor-token {first}\n".encode()


def test_shutdown_destroys_a_guest_that_ignores_the_power_button(
    host: tuple[hosts.LocalHost, Path], guest: guest_image.Guest, tmp_path: Path
) -> None:
    local, _ = host
    uuid = str(uuidlib.uuid4())
    # A paused guest cannot react to ACPI, so the timeout passes and the driver destroys it.
    xml = guest.domain_xml(name=f"driver-{uuid[:8]}", uuid=uuid, serial_log=tmp_path / "s.log")

    async def main() -> None:
        async with LibvirtHypervisor(local.uri) as hypervisor:
            await hypervisor.define(xml)
            try:
                await hypervisor.start(uuid)
                await hypervisor.suspend(uuid)
                outcome = await hypervisor.shutdown(uuid, timeout=1.0)
                assert outcome is base.ShutdownOutcome.FORCED
                await expect_state(hypervisor, uuid, S.SHUTOFF, "destroyed")
            finally:
                await hypervisor.undefine(uuid)

    asyncio.run(main())


def test_host_facts_show_this_machine(host: tuple[hosts.LocalHost, Path]) -> None:
    local, _ = host

    async def main() -> base.HostFacts:
        async with LibvirtHypervisor(local.uri) as hypervisor:
            return await hypervisor.host_facts()

    facts = asyncio.run(main())
    assert (facts.hostname, facts.uuid) == (local.hostname, local.uuid)
    assert facts.hypervisor_type == "QEMU"
    assert "qemu" in facts.domain_types
    # TCG emulates the generic models whatever the host CPU is.
    assert {"qemu64", "Nehalem"} <= set(facts.usable_cpu_models["qemu"])
    assert facts.cpus == os.cpu_count()
    assert sorted(cpu.id for cell in facts.cells for cpu in cell.cpus) == list(range(facts.cpus))
    # Each cell's memory is its node's MemTotal (not /proc/meminfo's, which may be larger
    # on VMs with memory outside any node).
    nodes = {
        int(node.name.removeprefix("node")): int(
            (node / "meminfo").read_text().split("MemTotal:")[1].split()[0]
        )
        for node in Path("/sys/devices/system/node").glob("node[0-9]*")
    }
    if nodes:
        assert {cell.id: cell.memory_kib for cell in facts.cells} == nodes
    assert facts.memory_kib == sum(cell.memory_kib for cell in facts.cells)
    assert all(cell.free_memory_kib is not None for cell in facts.cells)
    assert facts.cpu_model


def test_driver_reconnects_when_libvirtd_restarts(host: tuple[hosts.LocalHost, Path]) -> None:
    local, state_dir = host

    async def main() -> None:
        hypervisor = LibvirtHypervisor(local.uri, backoff_initial=0.1, backoff_max=0.5)
        async with hypervisor:
            events = hypervisor.events()
            await asyncio.to_thread(hosts.stop_hosts, state_dir)
            lost = await asyncio.wait_for(anext(events), timeout=30)
            assert lost == base.ConnectionEvent(local.uri, False, lost.reason)
            with pytest.raises(base.RetryableError):
                await hypervisor.list_domains()
            # Same state dir, so the same port and UUID.
            await asyncio.to_thread(hosts.start_hosts, 1, state_dir=state_dir)
            regained = await asyncio.wait_for(anext(events), timeout=30)
            assert regained == base.ConnectionEvent(local.uri, True)
            assert isinstance(await hypervisor.list_domains(), list)

    asyncio.run(main())
