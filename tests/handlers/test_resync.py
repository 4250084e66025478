"""Hand-offs that cannot be lost (issue 15, point 9): an evicted VM whose agent stopped it
was never placed again. The controller's resync (handlers/listing.py) re-derives what to
do from the objects as listed, so a lost watch event only delays a VM; and the races that
left a VM with a claim but no binding (which made every later reconcile skip it) are
gone: a host event during an unbind, an Unschedulable write during a bind."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from kubevisor.handlers import listing
from kubevisor.kube.client import Object

from .fake_cluster import HOST_LABEL, NAMESPACE, Cluster, FakeKube, host, lease, vm

KEY = f"{NAMESPACE}/a"


async def _evicted_and_stopped(cluster: Cluster) -> None:
    """VM a on h1 in maintenance: the controller evicts it, its agent stops it."""
    await cluster.start(
        hosts=[host("h1", maintenance=True), host("h2")],
        vms=[vm("a", host="h1", eviction_strategy="Shutdown")],
    )
    await cluster.controller.check_host("h1")
    await cluster.vm_event("a")
    cluster.kube.agent_vm_status(KEY, phase="Stopped", created=False)


def _bound_to(cluster: Cluster, name: str) -> tuple[str | None, str | None, str | None]:
    """(status.host, host label, claim) of VM `name`: all three agree once bound."""
    obj = cluster.kube.vm(f"{NAMESPACE}/{name}")
    return (
        (obj.get("status") or {}).get("host"),
        (obj["metadata"].get("labels") or {}).get(HOST_LABEL),
        cluster.claims().get(f"{NAMESPACE}/{name}"),
    )


def test_a_stopped_evicted_vm_whose_event_was_lost_is_placed_by_the_resync(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await _evicted_and_stopped(cluster)
        # The watch event of the agent's write never reaches the controller: the host's
        # timers go on, and nothing about the VM changes.
        for _ in range(3):
            await cluster.controller.check_host("h1")
        assert _bound_to(cluster, "a") == ("h1", "h1", "h1")

        await listing.resync(cluster.controller)
        assert _bound_to(cluster, "a") == ("h2", "h2", "h2")
        assert cluster.vm_status("a")["phase"] == "Scheduled"
        assert cluster.kube.reasons("a") == ["Evicting", "Rescheduling", "Scheduled"]

    asyncio.run(main())


class _Interleaving(FakeKube):
    """An API server during whose VM status writes something else happens first: `during`
    runs (once) before the write whose status `when` matches is applied, as a watch
    event handled by another kopf worker while the write is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.when: Callable[[Object], bool] = lambda _: False
        self.during: Callable[[], Awaitable[None]] | None = None

    async def apply_vm_status(self, namespace: str, name: str, status: Object) -> Object:
        if self.during is not None and self.when(status):
            during, self.during = self.during, None
            await during()
        return await super().apply_vm_status(namespace, name, status)


def test_a_host_event_during_the_unbind_of_an_evicted_vm_does_not_strand_it() -> None:
    kube = _Interleaving()
    cluster = Cluster(kube=kube)

    async def main() -> None:
        await _evicted_and_stopped(cluster)
        # The unbind's write is in flight when an event of h1 (its agent's status, say)
        # is handled: every VM the cache shows on h1 gets its claim there ensured.
        kube.when = lambda status: "host" not in status
        kube.during = lambda: cluster.controller.on_host("MODIFIED", kube.host("h1"))
        await cluster.vm_event("a")
        assert _bound_to(cluster, "a") == ("h2", "h2", "h2")
        assert cluster.controller.state.usage("h1").vms == 0

    asyncio.run(main())


def test_a_bind_made_while_an_unschedulable_verdict_is_written_is_kept() -> None:
    kube = _Interleaving()
    cluster = Cluster(kube=kube)

    async def main() -> None:
        await cluster.start(hosts=[host("h1", cpus=1)], vms=[vm("a", vcpus=8)])
        # While the controller writes that a fits nowhere, a bigger host appears and its
        # event asks for every waiting VM to be tried again.
        kube.when = lambda status: status.get("phase") == "Unschedulable"
        kube.add_host(host("h2", cpus=8))
        cluster.controller.remember_lease(lease("h2"))
        kube.during = lambda: cluster.controller.on_host("ADDED", kube.host("h2"))
        await cluster.vm_event("a")
        assert _bound_to(cluster, "a") == ("h2", "h2", "h2")
        assert cluster.vm_status("a")["phase"] == "Scheduled"

    asyncio.run(main())


def test_the_resync_releases_the_claim_of_a_vm_whose_deletion_it_missed(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1", cpus=4)], vms=[vm("big", host="h1", vcpus=16), vm("a", vcpus=4)]
        )
        await cluster.vm_event("a")
        assert cluster.vm_status("a")["phase"] == "Unschedulable"

        del cluster.kube.vms[f"{NAMESPACE}/big"]  # its DELETED event never arrives
        await listing.resync(cluster.controller)
        assert cluster.claims() == {KEY: "h1"}
        assert _bound_to(cluster, "a") == ("h1", "h1", "h1")

    asyncio.run(main())


def test_the_resync_labels_again_a_bound_vm_whose_host_label_was_removed(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await cluster.start(hosts=[host("h1")], vms=[vm("a")])
        await cluster.vm_event("a")
        assert _bound_to(cluster, "a") == ("h1", "h1", "h1")
        del cluster.kube.vms[KEY].obj["metadata"]["labels"][HOST_LABEL]  # by hand
        await cluster.vm_event("a")
        await listing.resync(cluster.controller)
        assert _bound_to(cluster, "a") == ("h1", "h1", "h1")

    asyncio.run(main())


def test_a_claim_left_over_from_an_out_of_date_view_does_not_keep_a_vm_unplaced(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        await cluster.start(hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1")])
        # Unbound meanwhile (as an unbind the controller's view had not caught up with):
        # the controller still holds the claim on h1.
        status = cluster.kube.vms[KEY].obj["status"]
        del status["host"], status["placement"]
        status.update(phase="Pending", created=False)
        del cluster.kube.vms[KEY].obj["metadata"]["labels"][HOST_LABEL]
        with caplog.at_level(logging.WARNING, logger="kubevisor.controller"):
            await cluster.vm_event("a")
        host_now, label, claim = _bound_to(cluster, "a")
        assert host_now is not None and host_now == label == claim
        assert "default/a: held a claim on h1 without a binding; placing it again" in [
            r.getMessage() for r in caplog.records
        ]

    asyncio.run(main())
