"""Failover waits for a lost host's self-fencing (`Evacuation` with `core.selffence`): never
sooner than the deadline its agent published plus the margin after its last renewal, and
the host's Ready condition says why when that is longer than the grace. Evacuate on demand
(spec.evacuate, `core.evacuate`) moves a lost host's VMs without the grace, and is refused
while the host is Ready. Each moved VM's Rescheduling event says how its old copy stopped."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from kubevisor.api import schema
from kubevisor.handlers.controller import Settings
from kubevisor.kube.client import Object

from .fake_cluster import LEASE_NAMESPACE, START, Cluster, host, lease, vm


def fencing_host(name: str, deadline: int | None) -> Object:
    obj = host(name)
    if deadline is not None:
        obj["status"]["selfFence"] = {"deadlineSeconds": deadline}
    return obj


def condition(cluster: Cluster, name: str, kind: str) -> Object:
    conditions = cluster.kube.host(name)["status"]["conditions"]
    found: Object = next(c for c in conditions if c["type"] == kind)
    return found


def ready_message(cluster: Cluster, name: str) -> str:
    return str(condition(cluster, name, "Ready")["message"])


async def lose_h1(cluster: Cluster, seconds: float) -> None:
    """h1 stops renewing its Lease, h2 keeps renewing; `seconds` later h1 is checked."""
    cluster.clock.advance(seconds)
    cluster.controller.remember_lease(lease("h2", cluster.clock.now))
    await cluster.controller.check_host("h2")
    await cluster.controller.check_host("h1")


@pytest.mark.parametrize(
    ("grace", "deadline", "moves_after"),
    [
        # Lease (and heartbeat timeout) 40 s, margin 10 s: failover at
        # max(grace, deadline + 10 - 40) seconds after the heartbeat expired.
        pytest.param(120.0, 60, 120.0, id="default-grace-covers-a-60s-deadline"),
        pytest.param(120.0, None, 120.0, id="no-self-fencing-grace-alone"),
        pytest.param(5.0, 60, 30.0, id="short-grace-waits-for-the-deadline"),
        pytest.param(120.0, 200, 170.0, id="long-deadline-delays-the-grace"),
    ],
)
def test_failover_waits_for_the_self_fence_deadline(
    grace: float, deadline: int | None, moves_after: float
) -> None:
    cluster = Cluster(Settings(lease_namespace=LEASE_NAMESPACE, failover_grace=grace))

    async def main() -> None:
        await cluster.start(
            hosts=[fencing_host("h1", deadline), host("h2")], vms=[vm("a", host="h1")]
        )
        await lose_h1(cluster, 40 + moves_after - 1)
        assert cluster.vm_status("a")["host"] == "h1", "not before the agent fenced itself"
        delayed = moves_after > grace
        assert ("failover waits" in ready_message(cluster, "h1")) is delayed
        if delayed:
            assert f"failover waits {moves_after:.0f}s after the heartbeat expired" in (
                ready_message(cluster, "h1")
            )
        await lose_h1(cluster, 1)
        assert cluster.vm_status("a")["host"] == "h2"
        fenced = condition(cluster, "h1", "Fenced")
        status = cluster.kube.host("h1")["status"]
        if deadline is None:
            assert (fenced["status"], fenced["reason"]) == ("False", "NoFencing")
            assert "lastFenced" not in status
        else:
            assert (fenced["status"], fenced["reason"]) == ("True", "SelfFenced")
            fenced_at = START + timedelta(seconds=deadline)  # its last renewal was at START
            assert status["lastFenced"] == schema.timestamp(fenced_at)
        ((_, rescheduling),) = cluster.kube.said("a", "Rescheduling")
        stopped = (
            "stopped by its host's agent, which fences itself"
            if deadline is not None
            else "not confirmed stopped: host h1's agent does not fence itself"
        )
        assert f"its old copy was {stopped}" in rescheduling

    asyncio.run(main())


NO_FAILOVER = Settings(lease_namespace=LEASE_NAMESPACE, failover_grace=None)


async def request_evacuation(cluster: Cluster, when: str, *, confirmed: bool) -> None:
    """`kubevisor evacuate h1 [--confirm-fenced]`: the spec field, as the controller sees it."""
    obj = cluster.kube.host("h1")
    obj["spec"]["evacuate"] = {"requestedAt": when, "confirmedFenced": confirmed}
    obj["metadata"]["generation"] += 1
    cluster.kube.hosts["h1"].obj = obj
    await cluster.controller.on_host("MODIFIED", obj)
    await cluster.controller.check_host("h1")


def evacuation(cluster: Cluster) -> tuple[str, str]:
    status = cluster.kube.host("h1")["status"]["evacuation"]
    return status["outcome"], status["message"]


def test_evacuate_is_refused_while_the_host_is_ready_and_not_kept_for_later() -> None:
    cluster = Cluster(Settings(lease_namespace=LEASE_NAMESPACE, failover_grace=600.0))

    async def main() -> None:
        await cluster.start(hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1")])
        await request_evacuation(cluster, "2026-01-01T00:00:00Z", confirmed=True)
        outcome, message = evacuation(cluster)
        assert outcome == "Refused"
        assert "host h1 is Ready" in message
        assert [e[2] for e in cluster.kube.events if e[0] == "h1"] == ["EvacuationRefused"]
        await lose_h1(cluster, 40 + 30)
        assert cluster.vm_status("a")["host"] == "h1", "a refused request stays refused"

    asyncio.run(main())


def test_evacuate_confirmed_moves_every_vm_of_a_lost_host_at_once() -> None:
    cluster = Cluster(NO_FAILOVER)

    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")],
            vms=[vm("a", host="h1"), vm("m", host="h1", run_strategy="Manual")],
        )
        await lose_h1(cluster, 40 + 5)
        assert cluster.vm_status("a")["host"] == "h1", "automatic failover is off"
        await request_evacuation(cluster, "2026-01-01T00:00:00Z", confirmed=True)
        assert evacuation(cluster)[0] == "Evacuated"
        assert (cluster.vm_status("a")["host"], cluster.vm_status("m")["host"]) == ("h2", "h2")
        assert condition(cluster, "h1", "Fenced")["reason"] == "ConfirmedByHand"
        assert cluster.kube.host("h1")["status"]["lastFenced"] == schema.timestamp(
            cluster.clock.now
        )
        ((_, rescheduling),) = cluster.kube.said("a", "Rescheduling")
        assert rescheduling == (
            "host h1 was evacuated on request; its old copy was confirmed stopped by hand "
            "(kubevisor evacuate --confirm-fenced); placing it again"
        )

    asyncio.run(main())


def test_evacuate_unconfirmed_waits_for_the_agents_self_fencing() -> None:
    cluster = Cluster(NO_FAILOVER)

    async def main() -> None:
        await cluster.start(hosts=[fencing_host("h1", 60), host("h2")], vms=[vm("a", host="h1")])
        await lose_h1(cluster, 40 + 5)
        await request_evacuation(cluster, "2026-01-01T00:00:00Z", confirmed=False)
        outcome, message = evacuation(cluster)
        assert (outcome, cluster.vm_status("a")["host"]) == ("Waiting", "h1")
        assert "waiting 25s more" in message
        await lose_h1(cluster, 24)
        assert cluster.vm_status("a")["host"] == "h1"
        await lose_h1(cluster, 1)
        assert evacuation(cluster)[0] == "Evacuated"
        assert cluster.vm_status("a")["host"] == "h2"
        reasons = [e[2] for e in cluster.kube.events if e[0] == "h1"]
        assert reasons == ["EvacuationWaiting", "EvacuationEvacuated"]

    asyncio.run(main())


def test_evacuate_without_confirmation_is_refused_for_a_host_that_does_not_fence_itself() -> None:
    cluster = Cluster(NO_FAILOVER)

    async def main() -> None:
        await cluster.start(hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1")])
        await lose_h1(cluster, 40 + 3600)
        await request_evacuation(cluster, "2026-01-01T00:00:00Z", confirmed=False)
        outcome, message = evacuation(cluster)
        assert outcome == "Refused"
        assert "--confirm-fenced" in message
        assert cluster.vm_status("a")["host"] == "h1"

    asyncio.run(main())
