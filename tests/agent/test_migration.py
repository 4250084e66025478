"""The agents' half of live migration (`agent.migration.Migrator`) between two fakes.

The source's monitor loop runs against `FakeHypervisor`, whose migrations advance one
100 ms tick per turn of the event loop and can be steered while they run (stalled, dirtied
faster than they copy). The migrator samples every turn here (`sampling=(0, 0)`) and its
clock moves 0.1 s per reading, so a timeout of seconds passes in a few dozen samples. The
rest of the agent is `Port`, an in-memory `AgentPort`; the API server is `FakeApiServer`,
which keeps each field manager's part of the job's status.
"""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from agent.fakeapi import NAMESPACE, FakeApiServer
from kubevisor.agent.migration import Migrator
from kubevisor.agent.network import NetworkNotReady
from kubevisor.api.hypervisorhost import SharedStorage
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.api.wire import (
    MIGRATION_SOURCE_LABEL,
    MIGRATION_SOURCE_MANAGER,
    MIGRATION_TARGET_LABEL,
    MIGRATION_TARGET_MANAGER,
)
from kubevisor.core.domain.host import HostEnvironment
from kubevisor.drivers import base
from kubevisor.drivers.fake import FakeHypervisor
from kubevisor.kube.client import Kube, Object

SOURCE, TARGET = "source", "target"
SOURCE_URI, TARGET_URI = "fake://source", "fake://target"
JOB = f"{NAMESPACE}/move"
MEMORY_MIB = 64


class Port:
    """The rest of an agent, as the migrator sees it."""

    def __init__(self) -> None:
        self.vms: dict[str, Object] = {}
        self.requeued: list[str] = []
        self.removed: list[str] = []
        self.prepared: list[str] = []
        self.networks_missing = 0
        """How many more calls of `environment` find the VM's Networks not realisable."""

    def bound_vm(self, key: str) -> Object | None:
        return self.vms.get(key)

    def owns(self, uid: str) -> bool:
        return any(obj["metadata"]["uid"] == uid for obj in self.vms.values())

    def requeue(self, key: str) -> None:
        self.requeued.append(key)

    def shared_storage(self) -> SharedStorage | None:
        return None

    async def environment(self, vm: VirtualMachine, uid: str) -> HostEnvironment:
        if self.networks_missing:
            self.networks_missing -= 1
            raise NetworkNotReady("team/blue: no DHCP-port address allocated for this host")
        self.prepared.append(uid)
        return HostEnvironment(domain_type="qemu", serial_log=f"/vms/{uid}/serial.log")

    async def remove_stray(self, uid: str) -> None:
        self.removed.append(uid)


class Clock:
    """A monotonic clock that moves 0.1 s each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.1
        return self.now


def domain_xml(uid: str) -> str:
    root = ET.Element("domain", type="qemu")
    ET.SubElement(root, "name").text = f"{NAMESPACE}_vm"
    ET.SubElement(root, "uuid").text = uid
    ET.SubElement(root, "memory", unit="MiB").text = str(MEMORY_MIB)
    return ET.tostring(root, encoding="unicode")


def vm_object(uid: str) -> Object:
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm", "namespace": NAMESPACE, "uid": uid, "generation": 1},
        "spec": {"memory": {"size": f"{MEMORY_MIB}Mi"}},
        "status": {"host": SOURCE, "phase": "Running"},
    }


def job(uid: str, *, phase: str = "Running", **options: Any) -> Object:
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "MigrationJob",
        "metadata": {
            "name": "move",
            "namespace": NAMESPACE,
            "labels": {MIGRATION_SOURCE_LABEL: SOURCE, MIGRATION_TARGET_LABEL: TARGET},
        },
        "spec": {"vm": "vm", "options": options},
        "status": {
            "phase": phase,
            "source": SOURCE,
            "target": TARGET,
            "targetAgent": {
                "ready": True,
                "libvirtURI": TARGET_URI,
                "domainXML": domain_xml(uid),
                "vmUID": uid,
            },
        },
    }


class Source:
    """A source host with one running VM, and the target it migrates to."""

    def __init__(self, host: FakeHypervisor, target: FakeHypervisor, api: FakeApiServer) -> None:
        self.hv, self.target, self.api = host, target, api
        self.uid = str(uuidlib.uuid4())
        self.port = Port()
        self.port.vms[f"{NAMESPACE}/vm"] = vm_object(self.uid)
        self.migrator = Migrator(
            self.port,
            kube=cast(Kube, api),
            hypervisor=host,
            host=SOURCE,
            libvirt_uri=SOURCE_URI,
            migrate_uri=None,
            clock=Clock(),
            sampling=(0.0, 0.0),
        )

    def status(self) -> Object:
        return self.api.job_status(JOB, MIGRATION_SOURCE_MANAGER)

    def transfer(self) -> tuple[str, str]:
        transfer = self.status().get("transfer") or {}
        return transfer.get("state", ""), transfer.get("message", "")

    def progress_writes(self) -> list[Object]:
        return [s["progress"] for m, s in self.api.job_writes.get(JOB, []) if "progress" in s]

    async def start(self, **options: Any) -> None:
        await self.migrator.on_job("MODIFIED", job(self.uid, **options))

    async def ended(self) -> tuple[str, str]:
        """The transfer's outcome, once the source reported one."""
        await until(lambda: self.transfer()[0] not in ("", "Running"), what="the transfer to end")
        return self.transfer()

    async def migrating(self) -> base.JobStats:
        await until(lambda: self.uid in self.hv.migrations, what="libvirt's migration job")
        stats = await self.hv.job_stats(self.uid)
        assert stats is not None
        return stats


async def until(check: Callable[[], object], *, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0)


def run(scenario: Callable[[Source], Awaitable[None]]) -> None:
    async def main() -> None:
        network: dict[str, FakeHypervisor] = {}
        source = FakeHypervisor(uri=SOURCE_URI, network=network)
        target = FakeHypervisor(uri=TARGET_URI, network=network)
        await source.connect()
        await target.connect()
        host = Source(source, target, FakeApiServer())
        await source.define(domain_xml(host.uid))
        await source.start(host.uid)
        await scenario(host)

    asyncio.run(main())


def test_a_transfer_moves_the_vm_and_reports_its_progress() -> None:
    async def scenario(source: Source) -> None:
        key = f"{NAMESPACE}/vm"
        await source.start(bandwidthMiBps=16)
        await until(lambda: source.migrator.migrating_to(key) == TARGET, what="the transfer")
        # Its latest sample is there for the per-VM metrics while it runs.
        await until(lambda: source.uid in source.migrator.job_stats, what="a job sample")
        assert source.migrator.job_stats[source.uid].data_total == MEMORY_MIB << 20
        state, message = await source.ended()
        assert (state, message.startswith("migrated in")) == ("Succeeded", True)
        assert source.migrator.job_stats == {}, "gone with the transfer"
        assert "post-copy" not in message
        assert source.uid in source.target.domains and source.uid not in source.hv.domains
        percents = [p["percent"] for p in source.progress_writes() if "percent" in p]
        assert len(percents) > 3, "sampled while it ran"
        assert percents == sorted(percents) and percents[-1] > percents[0]
        assert source.progress_writes()[-1]["dataTotal"] == MEMORY_MIB << 20
        # The VM left: its vanished domain is not a guest to start again.
        assert source.migrator.migrating_to(key) is None
        assert source.migrator.is_departed(source.uid)
        assert source.port.requeued == [key, key], "at the start and at the end"
        assert source.migrator.forget_departed(source.uid) is True
        assert source.migrator.is_departed(source.uid) is False

    run(scenario)


def test_a_transfer_that_stops_moving_is_aborted_by_the_progress_timeout() -> None:
    async def scenario(source: Source) -> None:
        await source.start(bandwidthMiBps=1, progressTimeout=1)
        await source.migrating()
        source.hv.migrations[source.uid].stalled = True
        state, message = await source.ended()
        assert state == "Failed"
        assert message.startswith("no progress for 1s (progress timeout 1s)"), message
        assert message.endswith("aborted (post-copy not allowed)")
        assert (await source.hv.state(source.uid)).state is base.DomainState.RUNNING
        assert source.uid not in source.target.domains
        assert not source.migrator.is_departed(source.uid), "it stays here"

    run(scenario)


def test_a_transfer_that_never_converges_is_aborted_by_the_completion_timeout() -> None:
    async def scenario(source: Source) -> None:
        # 1 s per GiB of a guest counted as at least 2 GiB: 2 s.
        await source.start(bandwidthMiBps=1, completionTimeoutPerGiB=1)
        await source.migrating()
        # The guest dirties more than the link moves: it keeps copying, never finishing.
        source.hv.migrations[source.uid].dirty_bytes_per_tick = 1 << 20
        state, message = await source.ended()
        assert state == "Failed"
        assert message.startswith("not completed after 2s (completion timeout 2s"), message
        assert (await source.hv.state(source.uid)).state is base.DomainState.RUNNING

    run(scenario)


def test_a_transfer_that_never_converges_switches_to_post_copy_when_allowed() -> None:
    async def scenario(source: Source) -> None:
        await source.start(bandwidthMiBps=1, completionTimeoutPerGiB=1, postCopy=True)
        await source.migrating()
        source.hv.migrations[source.uid].dirty_bytes_per_tick = 1 << 20
        state, message = await source.ended()
        assert (state, message.endswith("(post-copy)")) == ("Succeeded", True), message
        assert ("start_post_copy", source.uid) in source.hv.calls
        assert ("abort_job", source.uid) not in source.hv.calls
        assert source.uid in source.target.domains

    run(scenario)


def test_a_cancelled_transfer_is_aborted_and_reported_cancelled() -> None:
    async def scenario(source: Source) -> None:
        await source.start(bandwidthMiBps=1)
        await source.migrating()
        cancelled = job(source.uid, bandwidthMiBps=1)
        cancelled["spec"]["cancel"] = True
        await source.migrator.on_job("MODIFIED", cancelled)
        assert await source.ended() == ("Cancelled", "cancelled (spec.cancel)")
        assert (await source.hv.state(source.uid)).state is base.DomainState.RUNNING

    run(scenario)


def cold_job(uid: str, **options: Any) -> Object:
    moving = job(uid, **options)
    moving["spec"]["mode"] = "Cold"
    return moving


def test_a_cold_transfer_shuts_the_guest_down_and_moves_it_started_paused() -> None:
    async def scenario(source: Source) -> None:
        before = len(source.hv.calls)
        await source.migrator.on_job("MODIFIED", cold_job(source.uid))
        state, message = await source.ended()
        assert (state, message.startswith("moved cold in")) == ("Succeeded", True), message
        calls = [op for op, uid in source.hv.calls[before:] if uid == source.uid]
        # Shut down, started again (paused: no guest instruction ran), then migrated.
        assert calls.index("shutdown") < calls.index("start") < calls.index("migrate"), calls
        assert "resume" not in calls
        assert source.uid in source.target.domains and source.uid not in source.hv.domains
        assert source.migrator.is_departed(source.uid)

    run(scenario)


def test_a_cold_transfer_of_a_paused_guest_resumes_it_to_shut_it_down() -> None:
    async def scenario(source: Source) -> None:
        await source.hv.suspend(source.uid)
        before = len(source.hv.calls)
        await source.migrator.on_job("MODIFIED", cold_job(source.uid))
        assert (await source.ended())[0] == "Succeeded"
        calls = [op for op, uid in source.hv.calls[before:] if uid == source.uid]
        assert calls.index("resume") < calls.index("shutdown") < calls.index("start"), calls

    run(scenario)


def test_a_cancelled_cold_transfer_leaves_the_domain_paused_unbooted_on_the_source() -> None:
    async def scenario(source: Source) -> None:
        await source.migrator.on_job("MODIFIED", cold_job(source.uid, bandwidthMiBps=1))
        await source.migrating()
        cancelled = cold_job(source.uid, bandwidthMiBps=1)
        cancelled["spec"]["cancel"] = True
        await source.migrator.on_job("MODIFIED", cancelled)
        assert await source.ended() == ("Cancelled", "cancelled (spec.cancel)")
        # Its disks stay here; the agent's reconcile resumes it (a fresh boot) here.
        assert (await source.hv.state(source.uid)).state is base.DomainState.PAUSED
        assert source.uid not in source.target.domains
        assert not source.migrator.is_departed(source.uid)

    run(scenario)


def test_a_cold_transfer_of_a_vm_without_a_domain_fails_saying_so() -> None:
    async def scenario(source: Source) -> None:
        await source.hv.undefine(source.uid)
        await source.migrator.on_job("MODIFIED", cold_job(source.uid))
        state, message = await source.ended()
        assert state == "Failed"
        assert "the VM's domain is not defined on the source" in message

    run(scenario)


async def preparing_target(
    source: Source, port: Port, *, migrate_uri: str | None = None, **options: Any
) -> Migrator:
    """The target's migrator, after it handled the job going Preparing."""
    source.api.vms[f"{NAMESPACE}/vm"] = vm_object(source.uid)
    target = Migrator(
        port,
        kube=cast(Kube, source.api),
        hypervisor=source.target,
        host=TARGET,
        libvirt_uri=TARGET_URI,
        migrate_uri=migrate_uri,
        **options,
    )
    preparing = job(source.uid, phase="Preparing")
    del preparing["status"]["targetAgent"]
    await target.on_job("MODIFIED", preparing)
    return target


def test_the_target_publishes_the_domain_and_forgets_a_failed_job() -> None:
    async def scenario(source: Source) -> None:
        api, uid = source.api, source.uid
        port = Port()
        target = await preparing_target(source, port, migrate_uri="tcp://10.0.0.2")
        published = api.job_status(JOB, MIGRATION_TARGET_MANAGER)["targetAgent"]
        assert published["ready"] is True
        assert (published["libvirtURI"], published["migrateURI"]) == (TARGET_URI, "tcp://10.0.0.2")
        assert published["vmUID"] == uid and f"<uuid>{uid}</uuid>" in published["domainXML"]
        assert port.prepared == [uid]
        assert target.is_incoming(uid) and target.incoming_uids() == {uid}
        failed = job(uid, phase="Failed")
        await target.on_job("MODIFIED", failed)
        assert not target.is_incoming(uid)
        assert port.removed == [uid], "nothing of it stays on the target"

    run(scenario)


@pytest.mark.parametrize(
    ("missing", "ready", "message"),
    [
        pytest.param(3, True, None, id="the-networks-arrive-while-it-waits"),
        pytest.param(
            1000,
            False,
            "team/blue: no DHCP-port address allocated for this host",
            id="they-never-do",
        ),
    ],
)
def test_the_target_waits_for_the_vms_networks_before_it_answers(
    missing: int, ready: bool, message: str | None
) -> None:
    """The Network naming this host's DHCP port may reach the agent after the job does."""

    async def scenario(source: Source) -> None:
        api, uid = source.api, source.uid
        port = Port()
        port.networks_missing = missing
        await preparing_target(source, port, clock=Clock(), network_wait=(2.0, 0.0))
        published = api.job_status(JOB, MIGRATION_TARGET_MANAGER)["targetAgent"]
        assert (published["ready"], published.get("message")) == (ready, message)
        assert port.prepared == ([uid] if ready else [])

    run(scenario)
