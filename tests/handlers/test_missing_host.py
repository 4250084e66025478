"""A VM whose status names a host that has no HypervisorHost (deleted for good, or a
hand-edited status) is treated as bound to a lost host (issue 15, point 8): Unknown with
a condition that says the host does not exist, failed over after the grace like any lost
host, and deletable."""

from __future__ import annotations

import asyncio

import pytest

from kubevisor.handlers.controller import Settings

from .fake_cluster import HOST_LABEL, LEASE_NAMESPACE, VM_FINALIZER, Cluster, host, lease, vm


def ready(status: dict[str, object]) -> tuple[str, str, str]:
    (condition,) = [c for c in status["conditions"] if c["type"] == "Ready"]  # type: ignore[attr-defined]
    return condition["status"], condition["reason"], condition["message"]


async def _tick(cluster: Cluster, seconds: float, *alive: str) -> None:
    """`seconds` later: the hosts `alive` renewed their Leases, and their timers fire."""
    cluster.clock.advance(seconds)
    for name in alive:
        cluster.controller.remember_lease(lease(name, cluster.clock.now))
        await cluster.controller.check_host(name)


def test_a_vm_on_a_host_that_never_existed_is_unknown_then_fails_over(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(hosts=[host("h2")], vms=[vm("a", host="h9")])
        await cluster.vm_event("a")

        status = cluster.vm_status("a")
        assert (status["host"], status["phase"]) == ("h9", "Unknown")
        assert ready(status) == (
            "Unknown",
            "HostNotFound",
            "host h9 is not Ready: HypervisorHost h9 does not exist",
        )

        # Grace 120 s, counted from when it was missed; the timers judge it every 2 s.
        await _tick(cluster, 118, "h2")
        assert cluster.vm_status("a")["host"] == "h9"

        await _tick(cluster, 2, "h2")
        status = cluster.vm_status("a")
        assert (status["host"], status["phase"]) == ("h2", "Scheduled")
        assert cluster.kube.vm("default/a")["metadata"]["labels"][HOST_LABEL] == "h2"
        assert cluster.claims() == {"default/a": "h2"}
        assert cluster.kube.reasons("a") == ["Rescheduling", "Scheduled", "FailingOver"]
        ((_, rescheduling),) = cluster.kube.said("a", "Rescheduling")
        assert rescheduling == (
            "host h9 has had no HypervisorHost and no heartbeat for 120s (failover grace "
            "120s); its old copy was not confirmed stopped: host h9's agent does not fence "
            "itself; placing it again"
        )
        assert cluster.kube.said("a", "FailingOver") == [
            (
                "Warning",
                "host h9 was lost: restarts on h2 from its image: the changes to its local "
                "disks on h9 are lost",
            )
        ]

    asyncio.run(main())


def test_the_hosts_timers_find_such_a_vm_without_an_event_of_it(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(hosts=[host("h2")], vms=[vm("a", host="h9")])
        await _tick(cluster, 0, "h2")
        assert cluster.vm_status("a")["phase"] == "Unknown"

        await _tick(cluster, 120, "h2")
        assert cluster.vm_status("a")["host"] == "h2"

    asyncio.run(main())


def test_a_deleted_host_whose_heartbeat_stopped_loses_its_vms_at_once(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1")])
        await _tick(cluster, 200, "h2")  # h1's Lease (40 s) expired 160 s ago, unjudged
        assert cluster.vm_status("a")["host"] == "h1"

        gone = cluster.kube.hosts.pop("h1").obj
        await cluster.controller.on_host("DELETED", gone)

        # Lost for as long as its heartbeat has been gone, not only since the deletion.
        assert cluster.vm_status("a")["host"] == "h2"
        assert cluster.kube.reasons("a") == ["Rescheduling", "Scheduled", "FailingOver"]

    asyncio.run(main())


def test_a_deleted_host_whose_agent_still_heartbeats_keeps_its_vms(cluster: Cluster) -> None:
    """Its agent registers the host again; nothing moves meanwhile."""

    async def main() -> None:
        await cluster.start(hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1")])
        gone = cluster.kube.hosts.pop("h1").obj
        await cluster.controller.on_host("DELETED", gone)
        await _tick(cluster, 30, "h1", "h2")
        await cluster.vm_event("a")

        status = cluster.vm_status("a")
        assert (status["host"], status["phase"]) == ("h1", "Running")
        assert "Rescheduling" not in cluster.kube.reasons("a")

        # The agent stops too: lost once its Lease expired, failed over after the grace.
        await _tick(cluster, 40, "h2")
        assert cluster.vm_status("a")["phase"] == "Unknown"
        assert ready(cluster.vm_status("a"))[1] == "HostNotFound"
        await _tick(cluster, 118, "h2")
        assert cluster.vm_status("a")["host"] == "h1"
        await _tick(cluster, 2, "h2")
        assert cluster.vm_status("a")["host"] == "h2"

    asyncio.run(main())


def test_the_host_coming_back_ends_it(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(hosts=[host("h2")], vms=[vm("a", host="h1")])
        await cluster.vm_event("a")
        assert cluster.vm_status("a")["phase"] == "Unknown"

        await _tick(cluster, 60, "h2")
        cluster.controller.remember_lease(lease("h1", cluster.clock.now))
        await cluster.controller.on_host("ADDED", cluster.kube.add_host(host("h1")))
        await cluster.controller.check_host("h1")
        await _tick(cluster, 100, "h1", "h2")

        assert cluster.vm_status("a")["host"] == "h1"
        assert cluster.claims() == {"default/a": "h1"}
        assert cluster.controller.missing.since == {}

    asyncio.run(main())


@pytest.mark.parametrize("run_strategy", ["Manual", "Once"])
def test_a_vm_that_does_not_restart_after_a_crash_stays_unknown(
    cluster: Cluster, run_strategy: str
) -> None:
    async def main() -> None:
        await cluster.start(hosts=[host("h2")], vms=[vm("a", host="h9", run_strategy=run_strategy)])
        await _tick(cluster, 0, "h2")
        await _tick(cluster, 3600, "h2")

        status = cluster.vm_status("a")
        assert (status["host"], status["phase"]) == ("h9", "Unknown")

    asyncio.run(main())


def test_no_failover_without_a_grace_period() -> None:
    cluster = Cluster(Settings(lease_namespace=LEASE_NAMESPACE, failover_grace=None))

    async def main() -> None:
        await cluster.start(hosts=[host("h2")], vms=[vm("a", host="h9")])
        await _tick(cluster, 0, "h2")
        await _tick(cluster, 3600, "h2")

        assert (cluster.vm_status("a")["host"], cluster.vm_status("a")["phase"]) == (
            "h9",
            "Unknown",
        )

    asyncio.run(main())


def test_a_vm_on_a_missing_host_can_be_deleted(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(hosts=[host("h2")], vms=[vm("a", host="h9", run_strategy="Manual")])
        cluster.kube.vms["default/a"].obj["metadata"]["deletionTimestamp"] = "2024-05-01T12:05:00Z"
        await cluster.vm_event("a")

        assert VM_FINALIZER not in (
            cluster.kube.vm("default/a")["metadata"].get("finalizers") or []
        )

    asyncio.run(main())


def test_a_hand_edited_binding_is_cleared_when_the_vm_fails_over(cluster: Cluster) -> None:
    """The editor's field manager holds status.host too, so leaving it out of the
    controller's apply would keep it: the controller removes it outright."""

    async def main() -> None:
        await cluster.start(hosts=[host("h2")], vms=[vm("a")])
        cluster.kube.edit_vm_status("default/a", host="h9", phase="Running", created=True)
        await cluster.vm_event("a")
        assert cluster.vm_status("a")["phase"] == "Unknown"

        await _tick(cluster, 120, "h2")

        assert cluster.vm_status("a")["host"] == "h2"
        assert cluster.kube.called("patch_vm_status") == ["default/a"]

    asyncio.run(main())


def test_an_unchanged_unschedulable_write_from_a_stale_copy_leaves_a_new_binding(
    cluster: Cluster,
) -> None:
    """A reconcile that decided "fits nowhere" just before capacity freed writes nothing
    new; the binding a concurrent placement wrote meanwhile must survive it."""

    async def main() -> None:
        await cluster.start(hosts=[host("h1", memory_gib=1)], vms=[vm("big", host="h1"), vm("a")])
        stale = await cluster.vm_event("a")
        assert stale["status"]["phase"] == "Unschedulable"
        (scheduled,) = [c for c in stale["status"]["conditions"] if c["type"] == "Scheduled"]

        await cluster.controller.on_vm("DELETED", cluster.kube.vm("default/big"))
        assert cluster.vm_status("a")["host"] == "h1"

        await cluster.controller.write_vm_status(
            stale, binding=None, unschedulable=scheduled["message"]
        )
        assert cluster.vm_status("a")["host"] == "h1"
        assert cluster.kube.called("patch_vm_status") == []

    asyncio.run(main())
