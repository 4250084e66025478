"""Failover waits for a lost host's self-fencing (`Evacuation` with `core.selffence`): never
sooner than the deadline its agent published plus the margin after its last renewal, and
the host's Ready condition says why when that is longer than the grace."""

from __future__ import annotations

import asyncio

import pytest

from kubevisor.handlers.controller import Settings
from kubevisor.kube.client import Object

from .fake_cluster import LEASE_NAMESPACE, Cluster, host, lease, vm


def fencing_host(name: str, deadline: int | None) -> Object:
    obj = host(name)
    if deadline is not None:
        obj["status"]["selfFence"] = {"deadlineSeconds": deadline}
    return obj


def ready_message(cluster: Cluster, name: str) -> str:
    conditions = cluster.kube.host(name)["status"]["conditions"]
    return str(next(c["message"] for c in conditions if c["type"] == "Ready"))


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

    asyncio.run(main())
