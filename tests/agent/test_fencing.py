"""Fencing (`agent.fencing.Fencer`) on a `FakeHypervisor`: which domains go, which stay."""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from agent import domains
from agent.fakeapi import HOST, FakeApiServer
from kubevisor.agent.fencing import Fencer
from kubevisor.agent.vmfiles import VmFiles
from kubevisor.agent.vms import BoundVms
from kubevisor.drivers import base
from kubevisor.drivers.fake import FakeHypervisor
from kubevisor.kube.client import Kube


@dataclass
class Incoming:
    uids: set[str] = field(default_factory=set)

    def is_incoming(self, uid: str) -> bool:
        return uid in self.uids

    def incoming_uids(self) -> frozenset[str]:
        return frozenset(self.uids)


@dataclass
class Host:
    hv: FakeHypervisor
    api: FakeApiServer
    vms: BoundVms
    files: VmFiles
    incoming: Incoming
    fencer: Fencer

    async def domain(self, name: str, uid: str | None = None, *, ours: bool = True) -> str:
        """Define and start a domain, with kubevisor's metadata unless not `ours`."""
        uid = await domains.running(self.hv, name, uid, ours=ours)
        self.files.directory(uid).mkdir(parents=True)
        return uid

    def domains(self) -> set[str]:
        return domains.names(self.hv)

    def fenced(self) -> list[str]:
        return [
            e["involved"]["metadata"]["name"] for e in self.api.events if e["reason"] == "Fenced"
        ]


def run(tmp_path: Path, scenario: object) -> None:
    async def main() -> None:
        hv, api, vms = FakeHypervisor(), FakeApiServer(), BoundVms()
        await hv.connect()
        files = VmFiles(state_dir=tmp_path / "state", image_dir=tmp_path / "images")
        incoming = Incoming()
        fencer = Fencer(
            host=HOST,
            kube=cast(Kube, api),
            hypervisor=hv,
            vms=vms,
            files=files,
            incoming=incoming,
        )
        await scenario(Host(hv, api, vms, files, incoming, fencer))  # type: ignore[operator]

    asyncio.run(main())


def test_domains_of_vms_not_bound_here_are_destroyed_and_removed(tmp_path: Path) -> None:
    async def scenario(host: Host) -> None:
        here_key, here = host.api.create("here", {})
        host.vms.remember(host.api.vms[here_key])
        await host.domain("here", here)
        _, elsewhere = host.api.create("elsewhere", {}, host="other-host")
        await host.domain("elsewhere", elsewhere)
        await host.domain("gone")
        host.api.create("replaced", {})  # the same name, another uid: the domain is stale
        replaced = await host.domain("replaced")
        await host.domain("operators-own", ours=False)
        orphan = str(uuidlib.uuid4())
        host.files.directory(orphan).mkdir(parents=True)

        await host.fencer.fence()

        assert host.domains() == {"here", "operators-own"}
        assert sorted(host.fenced()) == ["elsewhere", "gone", "replaced"]
        assert {elsewhere, replaced, orphan} & host.files.known_uids() == set()
        assert here in host.files.known_uids()

    run(tmp_path, scenario)


def test_the_api_server_has_the_last_word_before_a_domain_is_fenced(tmp_path: Path) -> None:
    """The watch may lag: a VM bound here by the API server keeps its domain, as does a
    domain migrating here, or one whose VM cannot be read now."""

    async def scenario(host: Host) -> None:
        _, bound = host.api.create("bound-here", {})  # not delivered by the watch yet
        await host.domain("bound-here", bound)
        _, arriving = host.api.create("arriving", {}, host="source-host")
        await host.domain("arriving", arriving)
        host.incoming.uids.add(arriving)
        await host.domain("unreadable")

        reads = host.api.get_vm

        async def get_vm(namespace: str, name: str) -> object:
            if name == "unreadable":
                raise OSError("connection refused")
            return await reads(namespace, name)

        host.api.get_vm = get_vm  # type: ignore[method-assign]
        await host.fencer.fence()

        assert host.domains() == {"bound-here", "arriving", "unreadable"}
        assert host.fenced() == []
        assert arriving in host.files.known_uids(), "an incoming VM's files stay"

    run(tmp_path, scenario)


def test_a_domain_event_of_no_vm_here_fences_in_the_background_once(tmp_path: Path) -> None:
    async def scenario(host: Host) -> None:
        await host.domain("stray")
        host.fencer.fence_soon()
        host.fencer.fence_soon()  # a fencing runs already: not a second one
        for _ in range(10):
            await asyncio.sleep(0)
        assert host.domains() == set()
        assert host.hv.calls.count(("list_domains", "")) == 1
        assert host.fenced() == ["stray"]

    run(tmp_path, scenario)


def test_a_failing_hypervisor_postpones_background_fencing(tmp_path: Path) -> None:
    async def scenario(host: Host) -> None:
        await host.domain("stray")
        host.hv.fail_next("list_domains", base.RetryableError("libvirt restarts"))
        host.fencer.fence_soon()
        for _ in range(10):
            await asyncio.sleep(0)
        assert host.domains() == {"stray"}, "postponed, not crashed"
        host.fencer.fence_soon()
        for _ in range(10):
            await asyncio.sleep(0)
        assert host.domains() == set()

    run(tmp_path, scenario)


def test_remove_stray_destroys_the_domain_and_its_files(tmp_path: Path) -> None:
    async def scenario(host: Host) -> None:
        uid = await host.domain("left-behind")
        await host.fencer.remove_stray(uid)
        assert host.domains() == set()
        assert uid not in host.files.known_uids()
        assert [op for op, u in host.hv.calls if u == uid][-2:] == ["destroy", "undefine"]
        await host.fencer.remove_stray(uid)  # already gone: nothing to do, no error

    run(tmp_path, scenario)
