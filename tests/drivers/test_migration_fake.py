"""Live migration between two FakeHypervisors behaves as the real one does on two hosts.

Agent tests migrate between fakes; each behaviour here is one that
tests/drivers/test_migration_qemu.py shows libvirt has (or a refusal it makes, in its words),
so those tests can trust the fake.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from kubevisor.api.migrationjob import MigrationOptions
from kubevisor.core import migration
from kubevisor.drivers import base, fake

S = base.DomainState
MIB = 1024 * 1024
MEMORY_MIB = 64
SOURCE = "fake://source"
TARGET = "fake://target"


def domain_xml(name: str, uuid: str, *, description: str | None = None) -> str:
    domain = ET.Element("domain", type="test")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "uuid").text = uuid
    ET.SubElement(domain, "memory", unit="MiB").text = str(MEMORY_MIB)
    if description is not None:
        ET.SubElement(domain, "description").text = description
    return ET.tostring(domain, encoding="unicode")


Scenario = Callable[[fake.FakeHypervisor, fake.FakeHypervisor, str], Coroutine[Any, Any, None]]


def run(scenario: Scenario) -> None:
    """Run `scenario(source, target, uuid)` with the domain running on the source."""

    async def main() -> None:
        network: dict[str, fake.FakeHypervisor] = {}
        source = fake.FakeHypervisor(uri=SOURCE, network=network)
        target = fake.FakeHypervisor(uri=TARGET, network=network)
        await source.connect()
        await target.connect()
        uuid = str(uuidlib.uuid4())
        await source.define(domain_xml(f"migrant-{uuid[:8]}", uuid))
        await source.start(uuid)
        await scenario(source, target, uuid)

    asyncio.run(main())


async def first_stats(driver: base.Hypervisor, uuid: str) -> base.JobStats:
    """The migration job's stats once it has moved some bytes."""
    for _ in range(1000):
        stats = await driver.job_stats(uuid)
        if stats is not None and stats.data_processed > 0:
            return stats
        await asyncio.sleep(0)
    raise AssertionError("the migration never started transferring")


async def take(events: AsyncIterator[base.Event], uuid: str, count: int) -> list[str]:
    """The next `count` lifecycle events of the domain, as "kind/detail"."""
    seen: list[str] = []
    while len(seen) < count:
        event = await asyncio.wait_for(anext(events), timeout=1)
        if isinstance(event, base.DomainEvent) and event.uuid == uuid:
            seen.append(f"{event.kind.value}/{event.detail}")
    return seen


def test_migration_moves_the_domain_with_the_target_xml() -> None:
    async def scenario(source: fake.FakeHypervisor, target: fake.FakeHypervisor, uuid: str) -> None:
        source_events, target_events = source.events(), target.events()
        name = (await source.state(uuid)).name
        xml = domain_xml(name, uuid, description="rendered-for-the-target")
        await source.migrate(
            uuid, base.MigrationRequest(dest_uri=TARGET, xml=xml, max_downtime_ms=500)
        )

        with pytest.raises(base.DomainNotFound):
            await source.state(uuid)
        info = await target.state(uuid)
        assert (info.state, info.reason, info.persistent) == (S.RUNNING, "migrated", True)
        assert "rendered-for-the-target" in await target.domain_xml(uuid)
        expected_source = list(fake.MIGRATION_SOURCE_EVENTS)
        expected_target = list(fake.MIGRATION_TARGET_EVENTS)
        assert await take(source_events, uuid, len(expected_source)) == expected_source
        assert await take(target_events, uuid, len(expected_target)) == expected_target
        assert await target.job_stats(uuid) is None

    run(scenario)


def test_job_stats_progress_deterministically_while_it_runs() -> None:
    async def scenario(source: fake.FakeHypervisor, target: fake.FakeHypervisor, uuid: str) -> None:
        migrating = asyncio.create_task(
            source.migrate(uuid, base.MigrationRequest(dest_uri=TARGET, bandwidth_mibps=10))
        )
        samples = []
        while not migrating.done():
            stats = await source.job_stats(uuid) if uuid in source.domains else None
            if stats is not None:
                samples.append(stats)
            await asyncio.sleep(0)
        await migrating
        # 10 MiB/s in ticks of 100 ms of fake time: 1 MiB a tick, whenever it is sampled.
        assert len(samples) > 10
        for stats in samples:
            ticks = stats.time_elapsed_ms // fake.TICK_MS
            assert stats.data_total == MEMORY_MIB * MIB
            assert stats.data_processed == ticks * MIB
            assert stats.data_remaining == (MEMORY_MIB - ticks) * MIB
            assert stats.bandwidth_bps == 10 * MIB
            assert stats.memory_iteration == 1
        assert uuid in target.domains

    run(scenario)


def test_abort_keeps_the_guest_on_the_source() -> None:
    async def scenario(source: fake.FakeHypervisor, target: fake.FakeHypervisor, uuid: str) -> None:
        migrating = asyncio.create_task(
            source.migrate(uuid, base.MigrationRequest(dest_uri=TARGET, bandwidth_mibps=1))
        )
        await first_stats(source, uuid)
        await source.abort_job(uuid)
        with pytest.raises(base.MigrationAborted, match="canceled by client"):
            await migrating
        assert (await source.state(uuid)).state is S.RUNNING
        assert uuid not in target.domains
        assert await source.job_stats(uuid) is None
        await source.abort_job(uuid)  # nothing runs: a no-op

    run(scenario)


def test_post_copy_completes_and_can_no_longer_be_aborted() -> None:
    async def scenario(source: fake.FakeHypervisor, target: fake.FakeHypervisor, uuid: str) -> None:
        migrating = asyncio.create_task(
            source.migrate(
                uuid, base.MigrationRequest(dest_uri=TARGET, bandwidth_mibps=1, post_copy=True)
            )
        )
        await first_stats(source, uuid)
        await source.start_post_copy(uuid)
        stats = await source.job_stats(uuid)
        assert stats is not None and stats.post_copy
        assert (await source.state(uuid)).reason == "postcopy"
        with pytest.raises(base.PermanentError, match="post-copy"):
            await source.abort_job(uuid)
        await migrating
        assert (await target.state(uuid)).state is S.RUNNING
        assert uuid not in source.domains

    run(scenario)


REFUSALS = [
    pytest.param(
        {"dest_uri": "fake://nowhere"},
        base.RetryableError,
        "unable to connect",
        id="unknown-destination-is-retryable",
    ),
    pytest.param(
        {"dest_uri": TARGET, "xml": domain_xml("other", str(uuidlib.uuid4()))},
        base.PermanentError,
        "names another domain",
        id="xml-of-another-domain-is-permanent",
    ),
]


@pytest.mark.parametrize(("arguments", "error", "message"), REFUSALS)
def test_migration_refusals(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    async def scenario(source: fake.FakeHypervisor, target: fake.FakeHypervisor, uuid: str) -> None:
        with pytest.raises(error, match=message):
            await source.migrate(uuid, base.MigrationRequest(**arguments))
        assert (await source.state(uuid)).state is S.RUNNING
        assert not source.migrations

    run(scenario)


def test_a_stopped_domain_cannot_migrate() -> None:
    async def scenario(source: fake.FakeHypervisor, target: fake.FakeHypervisor, uuid: str) -> None:
        await source.destroy(uuid)
        with pytest.raises(base.RetryableError, match="not running"):
            await source.migrate(uuid, base.MigrationRequest(dest_uri=TARGET))

    run(scenario)


def test_post_copy_needs_the_flag_and_a_running_migration() -> None:
    async def scenario(source: fake.FakeHypervisor, target: fake.FakeHypervisor, uuid: str) -> None:
        with pytest.raises(base.PermanentError, match="while outgoing migration is in progress"):
            await source.start_post_copy(uuid)
        migrating = asyncio.create_task(
            source.migrate(uuid, base.MigrationRequest(dest_uri=TARGET, bandwidth_mibps=1))
        )
        await first_stats(source, uuid)
        with pytest.raises(base.PermanentError, match="requires migration to be started with"):
            await source.start_post_copy(uuid)
        await source.abort_job(uuid)
        with pytest.raises(base.MigrationAborted):
            await migrating

    run(scenario)


def test_tuning_a_running_migration() -> None:
    async def scenario(source: fake.FakeHypervisor, target: fake.FakeHypervisor, uuid: str) -> None:
        migrating = asyncio.create_task(
            source.migrate(uuid, base.MigrationRequest(dest_uri=TARGET, bandwidth_mibps=1))
        )
        await first_stats(source, uuid)
        await source.set_max_downtime(uuid, 250)
        assert source.domains[uuid].max_downtime_ms == 250
        await source.set_bandwidth(uuid, 0)  # unlimited: done within a tick or two
        await asyncio.wait_for(migrating, timeout=5)
        assert uuid in target.domains
        with pytest.raises(base.DomainNotFound):
            await source.set_bandwidth(uuid, 5)

    run(scenario)


def test_a_stalled_migration_is_aborted_by_the_progress_timeout() -> None:
    """The source agent's monitor loop in miniature: sample, track, judge, act."""

    async def scenario(source: fake.FakeHypervisor, target: fake.FakeHypervisor, uuid: str) -> None:
        options = MigrationOptions.model_validate({"progressTimeout": 2})
        migrating = asyncio.create_task(
            source.migrate(uuid, base.MigrationRequest(dest_uri=TARGET, bandwidth_mibps=1))
        )
        await first_stats(source, uuid)
        source.migrations[uuid].stalled = True  # the network dies: nothing moves any more
        watermark: migration.Watermark | None = None
        verdict = migration.CONTINUE
        while verdict.action is migration.Action.CONTINUE:
            stats = await source.job_stats(uuid)
            assert stats is not None
            now = stats.time_elapsed_ms / 1000  # the fake's own clock
            watermark = migration.track(watermark, stats, now=now)
            verdict = migration.judge(
                watermark, started_at=0.0, now=now, options=options, memory_bytes=64 * MIB
            )
            await asyncio.sleep(0)
        assert verdict.action is migration.Action.ABORT
        assert verdict.reason.startswith("no progress for 2s (progress timeout 2s)")
        await source.abort_job(uuid)
        with pytest.raises(base.MigrationAborted):
            await migrating

    run(scenario)


def test_failures_can_be_injected() -> None:
    async def scenario(source: fake.FakeHypervisor, target: fake.FakeHypervisor, uuid: str) -> None:
        source.fail_next("migrate", base.PermanentError("CPU incompatible with the target"))
        with pytest.raises(base.PermanentError, match="CPU incompatible"):
            await source.migrate(uuid, base.MigrationRequest(dest_uri=TARGET))
        await source.migrate(uuid, base.MigrationRequest(dest_uri=TARGET))
        assert uuid in target.domains

    run(scenario)
