"""Live migration with the libvirt driver between two real local libvirtd hosts.

The session's two hosts (tests/conftest.py `local_hosts`) run the tiny guest under TCG; its
serial log, appended to by the QEMU on either host, shows whether the guest kept counting
across the move. The source reaches the destination's libvirtd at its qemu+tcp URI and
the destination's QEMU at 127.0.0.1 (`MIGRATE_URI`): the hosts leave `migration_host`
unset, so without it the source would try the destination's hostname, which only the
destination's own /etc/hosts knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu
import pytest

import guestlog
from drivers.migration_tls import write_tls_dir
from harness import until_awaited
from kubevisor.drivers import base, fake
from kubevisor.drivers.libvirt import LibvirtHypervisor
from kubevisor.testbed.guest import Guest
from kubevisor.testbed.hosts import LocalHost

pytestmark = pytest.mark.libvirtd
S = base.DomainState
E = base.EventKind

MIGRATE_URI = "tcp://127.0.0.1"
BOOT_TIMEOUT = 60.0  # TCG boots the guest in about 3 s when the machine is idle
# Enough memory that 1 MiB/s keeps the transfer busy for minutes: every page is sent.
SLOW_MEMORY_MIB = 256
SLOW_MIBPS = 1
TARGET_MARK = "rendered-for-the-target"
# What each side's lifecycle events say, as "kind/detail": the fake's table, checked here.
# The source does not report "undefined" although UNDEFINE_SOURCE removes the domain.
SOURCE_EVENTS = list(fake.MIGRATION_SOURCE_EVENTS)
TARGET_EVENTS = list(fake.MIGRATION_TARGET_EVENTS)


def assert_counted_without_restart(serial: Path) -> None:
    """Every counter line follows the previous one: the guest never rebooted or lost state."""
    seen = guestlog.counters(serial)
    assert seen == list(range(1, len(seen) + 1)), f"counter jumped or restarted: {seen}"


def target_xml(guest: Guest, *, name: str, uuid: str, serial: Path, memory_mib: int) -> str:
    """The domain as the caller re-renders it for the target (here: a marked description)."""
    root = ET.fromstring(
        guest.domain_xml(name=name, uuid=uuid, serial_log=serial, memory_mib=memory_mib)
    )
    ET.SubElement(root, "description").text = TARGET_MARK
    return ET.tostring(root, encoding="unicode")


@dataclass
class Migrant:
    """A running guest on the source host and both hosts' drivers."""

    uuid: str
    name: str
    serial: Path
    memory_mib: int
    source: LibvirtHypervisor
    target: LibvirtHypervisor
    target_host: LocalHost


Boot = Callable[[int], contextlib.AbstractAsyncContextManager[Migrant]]


@pytest.fixture
def booted(local_hosts: list[LocalHost], tiny_guest: Guest, tmp_path: Path) -> Boot:
    """`async with booted(memory_mib) as migrant:` a guest running on host 1; on exit the
    domain is removed from both hosts and the drivers closed (in the test's own loop)."""

    @contextlib.asynccontextmanager
    async def boot(memory_mib: int) -> AsyncIterator[Migrant]:
        source_host, target_host = local_hosts
        uuid = str(uuidlib.uuid4())
        serial = tmp_path / f"serial-{uuid[:8]}.log"
        name = f"migrant-{uuid[:8]}"
        async with (
            LibvirtHypervisor(source_host.uri) as source,
            LibvirtHypervisor(target_host.uri) as target,
        ):
            try:
                await source.define(
                    tiny_guest.domain_xml(
                        name=name, uuid=uuid, serial_log=serial, memory_mib=memory_mib
                    )
                )
                await source.start(uuid)
                await guestlog.counter_above(serial, 1, timeout=BOOT_TIMEOUT)
                yield Migrant(uuid, name, serial, memory_mib, source, target, target_host)
            finally:
                for driver in (source, target):
                    await driver.undefine(uuid)

    return boot


def persistent_xml(uri: str, uuid: str) -> str:
    conn = libvirt.open(uri)
    try:
        return str(conn.lookupByUUIDString(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    finally:
        conn.close()


def max_downtime(uri: str, uuid: str) -> int:
    conn = libvirt.open(uri)
    try:
        return int(conn.lookupByUUIDString(uuid).migrateGetMaxDowntime(0))
    finally:
        conn.close()


async def collect(events: AsyncIterator[base.Event], uuid: str, into: list[str]) -> None:
    async for event in events:
        if isinstance(event, base.DomainEvent) and event.uuid == uuid:
            into.append(f"{event.kind.value}/{event.detail}")


async def transferring(migrant: Migrant) -> base.JobStats:
    """The migration job's stats once it has moved some bytes."""

    async def check() -> base.JobStats | None:
        stats = await migrant.source.job_stats(migrant.uuid)
        return stats if stats is not None and stats.data_processed > 0 else None

    return await until_awaited(
        check,
        timeout=15,
        what="the migration job to transfer data",
        retry_on=(base.HypervisorError,),
    )


def test_live_migration_moves_the_running_guest(booted: Boot, tiny_guest: Guest) -> None:
    async def main() -> None:
        async with booted(96) as migrant:
            source, target, uuid = migrant.source, migrant.target, migrant.uuid
            source_events: list[str] = []
            target_events: list[str] = []
            watchers = [
                asyncio.create_task(collect(source.events(), uuid, source_events)),
                asyncio.create_task(collect(target.events(), uuid, target_events)),
            ]
            before = await guestlog.counter_above(migrant.serial, 0)
            xml = target_xml(
                tiny_guest, name=migrant.name, uuid=uuid, serial=migrant.serial, memory_mib=96
            )
            started = time.monotonic()
            migrating = asyncio.create_task(
                source.migrate(
                    uuid,
                    base.MigrationRequest(
                        dest_uri=migrant.target_host.uri,
                        xml=xml,
                        bandwidth_mibps=20,  # a few seconds, so the job can be watched
                        max_downtime_ms=500,
                        migrate_uri=MIGRATE_URI,
                    ),
                )
            )
            samples: list[base.JobStats] = []
            while not migrating.done():
                try:
                    stats = await source.job_stats(uuid)
                except base.DomainNotFound:
                    break  # migrated and undefined since the loop's check
                if stats is not None:
                    samples.append(stats)
                await asyncio.wait({migrating}, timeout=0.05)  # the next sample, or the end
            await migrating
            took = time.monotonic() - started

            with pytest.raises(base.DomainNotFound):
                await source.state(uuid)
            info = await target.state(uuid)
            assert (info.state, info.reason, info.persistent) == (S.RUNNING, "migrated", True)
            assert TARGET_MARK in await target.domain_xml(uuid)
            assert TARGET_MARK in persistent_xml(migrant.target_host.uri, uuid)
            assert [s for s in samples if s.data_total > 0], f"no job stats seen: {samples}"
            assert all(not s.post_copy for s in samples)

            # Still counting on the target, from where it was: no reboot, no lost state.
            await guestlog.counter_above(
                migrant.serial, await guestlog.counter_above(migrant.serial, before)
            )
            assert_counted_without_restart(migrant.serial)

            async def events_seen() -> bool | None:
                done = source_events[-1:] == ["stopped/migrated"]
                return (done and target_events[-1:] == ["resumed/migrated"]) or None

            await until_awaited(events_seen, timeout=5, what="the migration's events")
            print(source_events, target_events)
            assert source_events == SOURCE_EVENTS
            assert target_events == TARGET_EVENTS
            for watcher in watchers:
                watcher.cancel()
            print(f"\nmigrated a 96 MiB TCG guest in {took:.2f}s, {len(samples)} job stats samples")

    asyncio.run(main())


def test_abort_keeps_the_guest_on_the_source(
    booted: Boot,
) -> None:
    async def main() -> None:
        async with booted(SLOW_MEMORY_MIB) as migrant:
            source, uuid = migrant.source, migrant.uuid
            migrating = asyncio.create_task(
                source.migrate(
                    uuid,
                    base.MigrationRequest(
                        dest_uri=migrant.target_host.uri,
                        bandwidth_mibps=SLOW_MIBPS,
                        max_downtime_ms=250,
                        migrate_uri=MIGRATE_URI,
                    ),
                )
            )
            stats = await transferring(migrant)
            assert stats.data_total >= SLOW_MEMORY_MIB * 1024 * 1024
            assert stats.bandwidth_bps <= 2 * SLOW_MIBPS * 1024 * 1024

            # The downtime was applied to the running job.
            async def downtime_applied() -> bool | None:
                return await asyncio.to_thread(max_downtime, source.uri, uuid) == 250 or None

            await until_awaited(
                downtime_applied,
                timeout=10,
                what="the max downtime to be 250 ms",
            )
            # A migration started without post-copy cannot switch to it; libvirt says why.
            with pytest.raises(base.PermanentError, match="requires migration to be started with"):
                await source.start_post_copy(uuid)

            asked = time.monotonic()
            await source.abort_job(uuid)
            with pytest.raises(base.MigrationAborted, match="canceled by client"):
                await migrating
            latency = time.monotonic() - asked

            info = await source.state(uuid)
            assert (info.state, info.persistent) == (S.RUNNING, True)
            assert uuid not in {d.uuid for d in await migrant.target.list_domains()}
            assert await source.job_stats(uuid) is None
            await source.abort_job(uuid)  # nothing runs: a no-op
            await guestlog.counter_above(migrant.serial, guestlog.counters(migrant.serial)[-1])
            assert_counted_without_restart(migrant.serial)
            print(f"\nabort: migrate() raised {latency * 1000:.0f} ms after abort_job was called")

    asyncio.run(main())


def test_cancelling_migrate_aborts_the_job(booted: Boot) -> None:
    async def main() -> None:
        async with booted(SLOW_MEMORY_MIB) as migrant:
            source, uuid = migrant.source, migrant.uuid
            migrating = asyncio.create_task(
                source.migrate(
                    uuid,
                    base.MigrationRequest(
                        dest_uri=migrant.target_host.uri,
                        bandwidth_mibps=SLOW_MIBPS,
                        migrate_uri=MIGRATE_URI,
                    ),
                )
            )
            await transferring(migrant)
            migrating.cancel()
            with pytest.raises(asyncio.CancelledError):
                await migrating
            # migrate() returned only once libvirt had ended the job.
            assert await source.job_stats(uuid) is None
            assert (await source.state(uuid)).state is S.RUNNING
            assert uuid not in {d.uuid for d in await migrant.target.list_domains()}

    asyncio.run(main())


def test_post_copy_switch_completes_a_slow_migration(
    booted: Boot,
) -> None:
    async def main() -> None:
        async with booted(SLOW_MEMORY_MIB) as migrant:
            source, target, uuid = migrant.source, migrant.target, migrant.uuid
            migrating = asyncio.create_task(
                source.migrate(
                    uuid,
                    base.MigrationRequest(
                        dest_uri=migrant.target_host.uri,
                        bandwidth_mibps=SLOW_MIBPS,
                        post_copy=True,
                        migrate_uri=MIGRATE_URI,
                    ),
                )
            )
            stats = await transferring(migrant)
            assert not stats.post_copy
            switched = time.monotonic()
            await source.start_post_copy(uuid)
            # At 1 MiB/s pre-copy would need minutes; post-copy finishes at once.
            await asyncio.wait_for(migrating, timeout=30)
            took = time.monotonic() - switched

            with pytest.raises(base.DomainNotFound):
                await source.state(uuid)
            info = await target.state(uuid)
            assert info.state is S.RUNNING
            assert info.persistent
            await guestlog.counter_above(migrant.serial, guestlog.counters(migrant.serial)[-1])
            assert_counted_without_restart(migrant.serial)
            print(f"\npost-copy: migrate() returned {took:.2f}s after the switch ({info.reason})")

    asyncio.run(main())


def test_raising_the_bandwidth_lets_a_slow_migration_finish(
    booted: Boot,
) -> None:
    async def main() -> None:
        async with booted(SLOW_MEMORY_MIB) as migrant:
            source, uuid = migrant.source, migrant.uuid
            migrating = asyncio.create_task(
                source.migrate(
                    uuid,
                    base.MigrationRequest(
                        dest_uri=migrant.target_host.uri,
                        bandwidth_mibps=SLOW_MIBPS,
                        migrate_uri=MIGRATE_URI,
                    ),
                )
            )
            await transferring(migrant)
            raised = time.monotonic()
            await source.set_bandwidth(uuid, 0)  # unlimited
            await asyncio.wait_for(migrating, timeout=45)
            took = time.monotonic() - raised
            assert (await migrant.target.state(uuid)).state is S.RUNNING
            print(f"\nset_bandwidth(unlimited): migration finished {took:.2f}s later")

    asyncio.run(main())


def migration_parameters(uri: str, uuid: str) -> dict[str, Any]:
    """The domain's QEMU migration parameters (QMP query-migrate-parameters)."""
    conn = libvirt.open(uri)
    try:
        domain = conn.lookupByUUIDString(uuid)
        reply = libvirt_qemu.qemuMonitorCommand(
            domain, '{"execute": "query-migrate-parameters"}', 0
        )
        parameters: dict[str, Any] = json.loads(reply)["return"]
        return parameters
    finally:
        conn.close()


@contextlib.contextmanager
def certificates(*hosts: LocalHost) -> Iterator[None]:
    """Each host's migrate_tls_x509_cert_dir holds certificates of one CA, until the end."""
    try:
        write_tls_dir(*(host.migration_tls_dir for host in hosts))
        yield
    finally:
        for host in hosts:
            for path in host.migration_tls_dir.iterdir():
                path.unlink()


def test_migration_over_tls_moves_the_guest_on_an_encrypted_stream(
    booted: Boot, local_hosts: list[LocalHost]
) -> None:
    """The agent's --migration-tls-dir: libvirt gives both QEMUs the hosts' certificates,
    the source's stream runs with TLS credentials for the destination's address, and the
    guest arrives still counting."""
    source_host, target_host = local_hosts

    async def main() -> None:
        async with (
            booted(96) as migrant,
            LibvirtHypervisor(source_host.uri, migration_tls=source_host.migration_tls_dir) as tls,
        ):
            uuid = migrant.uuid
            migrating = asyncio.create_task(
                tls.migrate(
                    uuid,
                    base.MigrationRequest(
                        dest_uri=target_host.uri, bandwidth_mibps=5, migrate_uri=MIGRATE_URI
                    ),
                )
            )
            await transferring(migrant)
            parameters = await asyncio.to_thread(migration_parameters, source_host.uri, uuid)
            await asyncio.wait_for(migrating, timeout=120)
            assert parameters.get("tls-creds"), f"no TLS credentials: {parameters}"
            assert parameters.get("tls-hostname") == "127.0.0.1"
            assert (await migrant.target.state(uuid)).state is S.RUNNING
            await guestlog.counter_above(migrant.serial, guestlog.counters(migrant.serial)[-1])
            assert_counted_without_restart(migrant.serial)
            print(f"\nTLS migration: source QEMU's parameters {parameters}")

    with certificates(source_host, target_host):
        asyncio.run(main())


def test_a_destination_without_certificates_fails_the_tls_migration_with_the_reason(
    booted: Boot, local_hosts: list[LocalHost]
) -> None:
    """The source's own certificates pass its check; the destination's QEMU, missing its
    files, fails the migration before it starts, and the guest stays on the source."""
    source_host, target_host = local_hosts

    async def main() -> None:
        async with (
            booted(96) as migrant,
            LibvirtHypervisor(source_host.uri, migration_tls=source_host.migration_tls_dir) as tls,
        ):
            with pytest.raises(base.HypervisorError) as failed:
                await tls.migrate(
                    migrant.uuid,
                    base.MigrationRequest(dest_uri=target_host.uri, migrate_uri=MIGRATE_URI),
                )
            print(f"\nTLS migration to a host without certificates: {failed.value}")
            assert str(target_host.migration_tls_dir) in str(failed.value)
            assert (await migrant.source.state(migrant.uuid)).state is S.RUNNING
            assert_counted_without_restart(migrant.serial)

    with certificates(source_host):
        asyncio.run(main())
