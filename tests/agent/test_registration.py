"""The agent's HypervisorHost (`agent.registration.HostRegistration`) on a `FakeHypervisor`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from kubernetes.aio.client.exceptions import ApiException

from agent.fakeapi import HOST, FakeApiServer
from kubevisor.agent.registration import HostRegistration
from kubevisor.agent.settings import Settings
from kubevisor.agent.vmfiles import VmFiles
from kubevisor.agent.vms import BoundVms
from kubevisor.drivers.fake import FakeHypervisor
from kubevisor.kube.client import Kube


@dataclass
class Host:
    hv: FakeHypervisor
    api: FakeApiServer
    vms: BoundVms
    settings: Settings
    files: VmFiles

    def __post_init__(self) -> None:
        self.registration = self.agent()

    def agent(self) -> HostRegistration:
        """The registration of an agent (another one: as if restarted) on this host."""
        return HostRegistration(
            settings=self.settings,
            kube=cast(Kube, self.api),
            hypervisor=self.hv,
            files=self.files,
            vms=self.vms,
        )

    def facts_read(self) -> int:
        return self.hv.calls.count(("host_facts", ""))


def run(root: Path, scenario: Callable[[Host], Awaitable[None]]) -> None:
    async def main() -> None:
        hv, api, vms = FakeHypervisor(), FakeApiServer(), BoundVms()
        await hv.connect()
        settings = Settings(
            host=HOST,
            domain_type="qemu",
            # A filesystem of its own: the free space it reports changes only with the test.
            state_dir=root / "state",
            image_dir=root / "images",
            console_endpoint="https://10.0.0.1:8443",
            metrics_endpoint="http://10.0.0.1:9091/metrics",
        )
        files = VmFiles(state_dir=settings.state_dir, image_dir=settings.image_dir)
        await scenario(Host(hv, api, vms, settings, files))

    asyncio.run(main())


def test_registration_creates_the_host_and_applies_only_what_changed(small_fs: Path) -> None:
    async def scenario(host: Host) -> None:
        await host.registration.register()
        assert host.api.host is not None and host.api.host_creations == 1
        status = host.api.host["status"]
        assert status["capacity"]["cpu"] == 8
        assert status["consoleEndpoint"] == "https://10.0.0.1:8443"
        assert status["metricsEndpoint"] == "http://10.0.0.1:9091/metrics"
        assert status["storage"]["provisioned"] == "0"
        await host.registration.register()
        assert (host.api.host_creations, host.api.host_status_writes) == (1, 1), "no change"
        key, _ = host.api.create("big", {"disks": [{"name": "data", "size": "10Gi"}]})
        host.vms.remember(host.api.vms[key])
        await host.registration.register()
        assert host.api.host_status_writes == 2
        assert host.api.host["status"]["storage"]["provisioned"] == "10Gi"

    run(small_fs, scenario)


def test_an_existing_host_with_its_status_is_not_written_again(small_fs: Path) -> None:
    """An agent restarted on a host whose status is current writes nothing."""

    async def scenario(host: Host) -> None:
        await host.registration.register()
        await host.agent().register()
        assert (host.api.host_creations, host.api.host_status_writes) == (1, 1)

    run(small_fs, scenario)


def test_the_heartbeat_registers_again_when_the_spec_changes(small_fs: Path) -> None:
    async def scenario(host: Host) -> None:
        host.api.set_host_spec({})  # created by an admin before the agent started
        await host.registration.register()
        await host.registration.follow_spec()
        assert host.facts_read() == 1, "same generation: one GET, nothing more"
        shared = small_fs / "nfs"
        shared.mkdir()
        host.api.set_host_spec({"sharedStorage": {"name": "nfs", "path": str(shared)}})
        await host.registration.follow_spec()
        assert host.facts_read() == 2
        assert host.registration.shared is not None and host.registration.shared.name == "nfs"
        assert host.api.host is not None
        assert host.api.host["status"]["storage"]["shared"]["name"] == "nfs"
        await host.registration.follow_spec()
        assert host.facts_read() == 2

    run(small_fs, scenario)


def test_shared_storage_is_read_when_asked_and_a_bad_one_is_ignored(small_fs: Path) -> None:
    async def scenario(host: Host) -> None:
        await host.registration.register()
        assert host.registration.shared is None
        host.api.set_host_spec({"sharedStorage": {"name": "nfs", "path": "/mnt/nfs"}})
        shared = await host.registration.refresh_shared()
        assert shared is not None and shared.path == "/mnt/nfs"
        assert host.registration.shared == shared
        host.api.set_host_spec({"sharedStorage": {"name": "nfs", "path": "relative/path"}})
        assert await host.registration.refresh_shared() is None

    run(small_fs, scenario)


def test_shared_cpus_are_read_with_the_shared_storage(small_fs: Path) -> None:
    async def scenario(host: Host) -> None:
        host.api.set_host_spec({"cpuSharedSet": "0-5", "cpuDedicatedSet": "4-7"})
        await host.registration.refresh_shared()
        assert host.registration.shared_cpus == frozenset({0, 1, 2, 3})
        host.api.set_host_spec({"cpuSharedSet": "not-a-cpuset"})
        await host.registration.refresh_shared()
        assert host.registration.shared_cpus is None, "ignored (logged): VMs float"

    run(small_fs, scenario)


def test_a_deleted_host_object_comes_back_with_what_the_agent_last_read(small_fs: Path) -> None:
    """Issue 15, point 7: it used to stay deleted, the agent failing every status write."""

    async def scenario(host: Host) -> None:
        spec = {"unschedulable": True, "sharedStorage": {"name": "nfs", "path": str(small_fs)}}
        host.api.set_host_spec(spec, labels={"topology.kubernetes.io/zone": "a"})
        await host.registration.register()
        assert host.api.host is not None
        host.api.host["metadata"]["labels"]["rack"] = "r1"  # labels change no generation
        await host.registration.follow_spec()
        reads = host.facts_read()

        host.api.delete_host()
        await host.registration.follow_spec()

        assert host.api.host is not None and host.api.host_creations == 1
        assert host.api.host["metadata"]["labels"] == {
            "topology.kubernetes.io/zone": "a",
            "rack": "r1",
        }
        assert host.api.host["spec"] == spec
        assert host.api.host["status"]["capacity"]["cpu"] == 8
        assert host.api.host["status"]["storage"]["shared"]["name"] == "nfs"
        assert host.facts_read() == reads + 1
        await host.registration.follow_spec()
        assert host.facts_read() == reads + 1, "registered: the next heartbeat only reads"

    run(small_fs, scenario)


def test_a_host_deleted_while_its_status_is_written_is_created_by_the_next_one(
    small_fs: Path,
) -> None:
    async def scenario(host: Host) -> None:
        await host.registration.register()
        key, _ = host.api.create("grows", {"disks": [{"name": "data", "size": "1Gi"}]})
        host.vms.remember(host.api.vms[key])
        read = host.api.get_host

        async def read_then_deleted(name: str) -> object:
            found = await read(name)
            host.api.delete_host()  # by an admin, between the agent's read and its write
            return found

        host.api.get_host = read_then_deleted  # type: ignore[method-assign]
        with pytest.raises(ApiException) as gone:
            await host.registration.register()
        assert gone.value.status == 404
        host.api.get_host = read  # type: ignore[method-assign]
        await host.registration.register()
        assert host.api.host is not None and host.api.host_creations == 2
        assert host.api.host["status"]["storage"]["provisioned"] == "1Gi"

    run(small_fs, scenario)
