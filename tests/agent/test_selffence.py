"""Self-fencing (`agent.selffence.SelfFence`) on a `FakeHypervisor`, with an API server that
the test cuts off: when the guests are destroyed, what is reported, when the fence lifts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from agent import domains
from agent.fakeapi import HOST, NAMESPACE, FakeApiServer
from kubevisor.agent.registration import HostRegistration
from kubevisor.agent.selffence import SelfFence
from kubevisor.agent.settings import Settings
from kubevisor.agent.vmfiles import VmFiles
from kubevisor.agent.vms import BoundVms
from kubevisor.drivers.fake import FakeHypervisor
from kubevisor.kube.client import Kube, Object

DEADLINE = 25


class CutApi(FakeApiServer):
    """The fake API server behind a link the test cuts (`cut`) and restores."""

    def __init__(self) -> None:
        super().__init__()
        self.cut = False
        self.renewals = 0

    def _reach(self) -> None:
        if self.cut:
            raise OSError("connection timed out")

    async def renew_lease(self, *, namespace: str, name: str, duration: int) -> None:
        self._reach()
        self.renewals += 1

    async def get_host(self, name: str) -> Object | None:
        self._reach()
        return await super().get_host(name)

    async def get_vm(self, namespace: str, name: str) -> Object | None:
        self._reach()
        return await super().get_vm(namespace, name)

    async def event(self, **fields: Any) -> None:
        self._reach()
        await super().event(**fields)

    def unbind(self, name: str) -> None:
        """What the controller's failover does to the VM: no host any more."""
        obj = self.vms[f"{NAMESPACE}/{name}"]
        obj["status"] = {"phase": "Pending"}
        obj["metadata"]["labels"] = {}


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Host:
    hv: FakeHypervisor
    api: CutApi
    clock: Clock
    fence: SelfFence

    def self_fenced_events(self) -> list[tuple[str, str]]:
        return [
            (e["involved"]["metadata"]["name"], e["message"])
            for e in self.api.events
            if e["reason"] == "SelfFenced"
        ]

    async def renew(self) -> None:
        """One heartbeat's renewal, as `HostRegistration.heartbeat` makes it."""
        await self.fence.renew(
            lambda: self.api.renew_lease(namespace="kubevisor-system", name=HOST, duration=40)
        )


def run(scenario: Callable[[Host], Awaitable[None]]) -> None:
    async def main() -> None:
        hv, api, clock = FakeHypervisor(), CutApi(), Clock()
        await hv.connect()
        fence = SelfFence(
            host=HOST, deadline=DEADLINE, kube=cast(Kube, api), hypervisor=hv, clock=clock
        )
        await scenario(Host(hv, api, clock, fence))

    asyncio.run(main())


def test_a_host_cut_off_fences_its_guests_at_the_deadline_and_lifts_once_failed_over() -> None:
    async def scenario(host: Host) -> None:
        _, web = host.api.create("web", {"runStrategy": "Always"})
        await domains.running(host.hv, "web", web)
        _, db = host.api.create("db", {"runStrategy": "Always"})
        await domains.running(host.hv, "db", db)
        await domains.running(host.hv, "operators-own", ours=False)
        await host.renew()
        host.api.cut = True

        host.clock.now += DEADLINE - 1
        with contextlib.suppress(OSError):
            await host.renew()  # the link is cut
        await host.fence.check()
        assert domains.names(host.hv, active=True) == {"web", "db", "operators-own"}
        assert not host.fence.fenced

        host.clock.now += 1
        await host.fence.check()
        assert domains.names(host.hv, active=True) == {"operators-own"}
        assert host.fence.fenced_uids() == {web, db}
        assert domains.names(host.hv) == {"web", "db", "operators-own"}, "only destroyed"
        assert host.self_fenced_events() == [], "the API server is out of reach"

        host.api.cut = False
        renewals = host.api.renewals
        await host.fence.check()
        message = f"self-fenced on host {HOST}: its Lease was not renewed for {DEADLINE}s"
        assert sorted(host.self_fenced_events()) == [("db", message), ("web", message)]
        await host.renew()
        assert host.api.renewals == renewals, "no renewal while its VMs are still bound here"
        waiting = asyncio.create_task(host.fence.wait_unfenced())
        await asyncio.sleep(0)
        assert not waiting.done(), "the workers reconcile nothing while fenced"

        host.api.unbind("web")
        await host.fence.check()
        assert host.fence.fenced, "db is still bound here"
        host.api.unbind("db")
        await host.fence.check()
        assert not host.fence.fenced
        await asyncio.wait_for(waiting, 1)
        await host.renew()
        assert host.api.renewals == renewals + 1
        assert len(host.self_fenced_events()) == 2, "each VM reported once"
        await host.fence.check()
        assert not host.fence.fenced, "the deadline counts from the lift"

    run(scenario)


def test_a_guest_started_again_while_fenced_is_destroyed_again() -> None:
    async def scenario(host: Host) -> None:
        _, uid = host.api.create("web", {"runStrategy": "Always"})
        await domains.running(host.hv, "web", uid)
        host.api.cut = True
        host.clock.now += DEADLINE
        await host.fence.check()
        await host.hv.start(uid)  # e.g. a reconcile that was under way
        await host.fence.check()
        assert domains.names(host.hv, active=True) == set()

    run(scenario)


def test_a_vm_not_failed_over_or_deleted_does_not_hold_the_fence() -> None:
    async def scenario(host: Host) -> None:
        _, manual = host.api.create("manual", {"runStrategy": "Manual"})
        await domains.running(host.hv, "manual", manual)
        key, gone = host.api.create("gone", {"runStrategy": "Always"})
        await domains.running(host.hv, "gone", gone)
        host.api.cut = True
        host.clock.now += DEADLINE
        await host.fence.check()
        assert host.fence.fenced_uids() == {manual, gone}
        host.api.delete(key)
        host.api.cut = False
        await host.fence.check()
        assert not host.fence.fenced
        assert domains.names(host.hv, active=True) == set(), "nothing it fenced restarts"

    run(scenario)


def test_a_host_with_no_guests_fences_and_lifts_once_the_api_answers() -> None:
    async def scenario(host: Host) -> None:
        host.api.cut = True
        host.clock.now += DEADLINE
        await host.fence.check()
        assert host.fence.fenced
        await host.fence.check()
        assert host.fence.fenced, "still cut off"
        host.api.cut = False
        await host.fence.check()
        assert not host.fence.fenced

    run(scenario)


def test_the_host_status_publishes_the_deadline(tmp_path: Path) -> None:
    async def scenario(host: Host) -> None:
        settings = Settings(
            host=HOST,
            domain_type="qemu",
            state_dir=tmp_path / "state",
            image_dir=tmp_path / "images",
            self_fence_after=DEADLINE,
        )
        registration = HostRegistration(
            settings=settings,
            kube=cast(Kube, host.api),
            hypervisor=host.hv,
            files=VmFiles(state_dir=settings.state_dir, image_dir=settings.image_dir),
            vms=BoundVms(),
            lease_guard=host.fence,
        )
        await registration.register()
        assert host.api.host is not None
        assert host.api.host["status"]["selfFence"] == {"deadlineSeconds": DEADLINE}

    run(scenario)
