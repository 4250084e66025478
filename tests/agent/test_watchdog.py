"""The agent's heartbeat and fence file (`agent.selffence`) and the watchdog process's
loop (`agent.watchdog.Watchdog`) on a `FakeHypervisor`: a silent agent's guests are
destroyed at its deadline, a stalled agent is killed, and an agent that starts again
neither forgets a fence nor gets a fresh deadline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

from agent import domains
from agent.fakeapi import HOST
from agent.test_selffence import DEADLINE, Clock, CutApi
from kubevisor.agent.selffence import HEARTBEAT, FenceFile, SelfFence, process_start_time
from kubevisor.agent.watchdog import Watchdog
from kubevisor.core import watchdog
from kubevisor.drivers.fake import FakeHypervisor
from kubevisor.kube.client import Kube


class Node:
    """One host: its hypervisor, the agent's API server, a shared clock, a state dir."""

    def __init__(self, state: Path) -> None:
        self.state, self.hv, self.api, self.clock = state, FakeHypervisor(), CutApi(), Clock()
        self.killed: list[tuple[int, int]] = []

    def agent(self) -> SelfFence:
        """A (new) agent's self-fence guard on this host."""
        return SelfFence(
            host=HOST,
            deadline=DEADLINE,
            kube=cast(Kube, self.api),
            hypervisor=self.hv,
            state_dir=self.state,
            clock=self.clock,
        )

    def watchdog(self) -> Watchdog:
        return Watchdog(
            host=HOST,
            state_dir=self.state,
            hypervisor=self.hv,
            stall_after=30,
            clock=self.clock,
            kill=lambda pid, sig: self.killed.append((pid, sig)),
        )

    async def renew(self, fence: SelfFence) -> None:
        with contextlib.suppress(OSError):
            await fence.renew(
                lambda: self.api.renew_lease(namespace="kubevisor-system", name=HOST, duration=40)
            )

    def heartbeat(self) -> watchdog.Heartbeat:
        return watchdog.parse((self.state / HEARTBEAT).read_text())

    def fence_file(self) -> dict[str, str]:
        return {uid: f.reason for uid, f in FenceFile(self.state).read().items()}


def run(tmp_path: Path, scenario: Callable[[Node], Awaitable[None]]) -> None:
    async def main() -> None:
        node = Node(tmp_path / "state")
        await node.hv.connect()
        await scenario(node)

    asyncio.run(main())


def test_the_agent_beats_with_its_last_renewal_and_deadline(tmp_path: Path) -> None:
    async def scenario(node: Node) -> None:
        fence = node.agent()
        node.clock.now = 1010.0
        await node.renew(fence)
        node.clock.now = 1012.0
        fence.beat()
        beat = node.heartbeat()
        assert (beat.pid, beat.renewed, beat.deadline, beat.beat) == (
            os.getpid(), 1010.0, DEADLINE, 1012.0
        )  # fmt: skip
        assert beat.started == process_start_time(os.getpid())

    run(tmp_path, scenario)


def test_a_silent_agent_is_fenced_at_its_deadline_and_killed_when_stalled(
    tmp_path: Path,
) -> None:
    async def scenario(node: Node) -> None:
        _, web = node.api.create("web", {"runStrategy": "Always"})
        await domains.running(node.hv, "web", web)
        await domains.running(node.hv, "operators-own", ours=False)
        fence = node.agent()
        await node.renew(fence)
        fence.beat()  # ... and then the agent hangs
        dog = node.watchdog()

        node.clock.now += DEADLINE - 1
        await dog.check()
        assert domains.names(node.hv, active=True) == {"web", "operators-own"}, "not yet due"
        node.clock.now += 1
        await dog.check()
        assert domains.names(node.hv, active=True) == {"operators-own"}
        assert node.fence_file() == {web: "FencedByWatchdog"}
        assert node.killed == [], "silent 25 s, not yet stalled"

        node.clock.now += 5
        await dog.check()
        await dog.check()
        assert node.killed == [(os.getpid(), signal.SIGKILL)], "killed once"

    run(tmp_path, scenario)


def test_a_beating_agent_is_left_alone(tmp_path: Path) -> None:
    async def scenario(node: Node) -> None:
        _, web = node.api.create("web", {"runStrategy": "Always"})
        await domains.running(node.hv, "web", web)
        fence = node.agent()
        node.api.cut = True
        dog = node.watchdog()
        for _ in range(40):  # cut off for 40 s: the agent fences by itself at 25 s
            node.clock.now += 1
            fence.beat()
            await dog.check()
        assert domains.names(node.hv, active=True) == {"web"}
        assert node.killed == []

    run(tmp_path, scenario)


def test_an_agent_that_starts_again_keeps_the_fence_and_its_deadline(tmp_path: Path) -> None:
    async def scenario(node: Node) -> None:
        _, web = node.api.create("web", {"runStrategy": "Always"})
        await domains.running(node.hv, "web", web)
        _, db = node.api.create("db", {"runStrategy": "Always"})
        first = node.agent()
        await node.renew(first)
        first.beat()
        node.clock.now += DEADLINE + 5
        await node.watchdog().check()
        assert node.fence_file() == {web: "FencedByWatchdog"}

        # The restarted agent: fenced from the start, no renewal, no reconcile.
        node.api.cut = True
        second = node.agent()
        assert second.fenced_uids() == {web}
        renewals = node.api.renewals
        node.api.cut = False
        await domains.running(node.hv, "db", db)  # started by hand meanwhile: a kubevisor VM
        node.api.cut = True
        await second.check()
        assert domains.names(node.hv, active=True) == set(), "db's deadline is past too"
        assert node.fence_file() == {web: "FencedByWatchdog", db: "SelfFenced"}
        await node.renew(second)
        assert node.api.renewals == renewals

        node.api.cut = False
        node.api.unbind("web")
        node.api.unbind("db")
        await second.check()
        assert not second.fenced
        assert not (node.state / "fenced.json").exists()
        events = sorted((e["involved"]["metadata"]["name"], e["reason"]) for e in node.api.events)
        assert events == [("db", "SelfFenced"), ("web", "FencedByWatchdog")]

    run(tmp_path, scenario)


def test_a_restarted_agent_counts_its_deadline_from_its_predecessors_renewal(
    tmp_path: Path,
) -> None:
    async def scenario(node: Node) -> None:
        _, web = node.api.create("web", {"runStrategy": "Always"})
        await domains.running(node.hv, "web", web)
        first = node.agent()
        await node.renew(first)
        first.beat()
        node.clock.now += DEADLINE - 5  # it dies; its successor starts cut off
        node.api.cut = True
        second = node.agent()
        node.clock.now += 5
        await second.check()
        assert second.fenced_uids() == {web}, "fenced at the predecessor's deadline"

    run(tmp_path, scenario)


def test_an_unreadable_heartbeat_or_fence_file_is_said_and_ignored(tmp_path: Path) -> None:
    async def scenario(node: Node) -> None:
        node.state.mkdir(parents=True)
        (node.state / HEARTBEAT).write_text("{")
        (node.state / "fenced.json").write_text(json.dumps([1]))
        await node.watchdog().check()
        fence = node.agent()
        assert not fence.fenced

    run(tmp_path, scenario)
