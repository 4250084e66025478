"""Resizing bound VMs (handlers/resizes.py): the issue's scenario on a fake API server.

An 8-CPU host at CPU ratio 1 runs VMs of 2 and 1 vCPUs beside `minimal` (1 vCPU).
`minimal` is patched to more vCPUs and restarted: the agent holds the start (Ready reason
ResizePending) and the controller claims the new size, or refuses it with the figures.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.placement import inputs
from kubevisor.handlers import listing
from kubevisor.handlers.controller import Controller, Settings
from kubevisor.kube.client import Kube

from .fake_cluster import LEASE_NAMESPACE, NAMESPACE, Cluster, host, lease, vm

REFUSED_8 = (
    "resize to 8 vCPUs, 1Gi memory refused on host h1: "
    "host h1 has 5 vCPUs free of 8 (ratio 1), needs 8"
)


def ratio_one_host() -> dict[str, Any]:
    obj = host("h1", cpus=8)
    obj["spec"]["allocationRatios"] = {"cpu": 1.0}
    return obj


def ready(reason: str, message: str = "") -> list[dict[str, Any]]:
    """The agent's Ready condition with `reason`."""
    status = "True" if reason in ("Running", "Stopped") else "False"
    return [
        {
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message or reason,
            "lastTransitionTime": "2024-05-01T12:00:00Z",
        }
    ]


async def three_running(cluster: Cluster) -> None:
    """a (2 vCPUs), b (1) and minimal (1) placed on h1 and running there."""
    await cluster.start(
        hosts=[ratio_one_host()],
        vms=[vm("a", vcpus=2), vm("b", vcpus=1), vm("minimal", vcpus=1)],
    )
    for name in ("a", "b", "minimal"):
        await cluster.vm_event(name)
        cluster.kube.agent_vm_status(
            f"{NAMESPACE}/{name}",
            phase="Running",
            created=True,
            domain={"state": "running", "reason": "booted"},
            conditions=ready("Running"),
        )
        await cluster.vm_event(name)


async def patch_and_restart(cluster: Cluster, vcpus: int) -> None:
    """`minimal` patched to `vcpus`, stopped and started: the agent holds the start."""
    key = f"{NAMESPACE}/minimal"
    cluster.kube.change_vm(key, {"spec": {"cpu": {"vcpus": vcpus}}})
    await cluster.vm_event("minimal")
    cluster.kube.agent_vm_status(
        key,
        phase="Stopped",
        domain={"state": "shutoff", "reason": "shutdown"},
        conditions=ready("ResizePending", "waiting for the controller to claim it"),
    )
    await cluster.vm_event("minimal")


def scheduled(cluster: Cluster, name: str) -> dict[str, Any]:
    return next(c for c in cluster.vm_status(name)["conditions"] if c["type"] == "Scheduled")


def vcpus_used(cluster: Cluster) -> int:
    return cluster.controller.state.usage("h1").vcpus


def test_a_running_vm_keeps_its_claim_until_its_agent_holds_the_new_size() -> None:
    cluster = Cluster()

    async def main() -> None:
        await three_running(cluster)
        placed = cluster.vm_status("minimal")["placement"]["size"]
        assert (placed["vcpus"], placed["cpuPolicy"], placed["memory"]) == (1, "shared", "1Gi")
        cluster.kube.change_vm(f"{NAMESPACE}/minimal", {"spec": {"cpu": {"vcpus": 8}}})
        await cluster.vm_event("minimal")

    asyncio.run(main())
    assert vcpus_used(cluster) == 4, "the running domain still has 1 vCPU"
    assert cluster.vm_status("minimal")["placement"]["size"]["vcpus"] == 1
    assert cluster.kube.reasons("minimal") == ["Scheduled"]


def test_a_new_size_that_does_not_fit_is_refused_with_figures_and_nothing_is_overbooked() -> None:
    cluster = Cluster()

    async def main() -> None:
        await three_running(cluster)
        await patch_and_restart(cluster, 8)
        await cluster.vm_event("minimal")  # again: the same refusal is not news
        await cluster.controller.check_host("h1")

    asyncio.run(main())
    assert scheduled(cluster, "minimal")["reason"] == "ResizeRefused"
    assert scheduled(cluster, "minimal")["message"] == REFUSED_8
    assert cluster.kube.said("minimal", "ResizeRefused") == [("Warning", REFUSED_8)]
    assert vcpus_used(cluster) == 4
    assert cluster.vm_status("minimal")["placement"]["size"]["vcpus"] == 1
    assert cluster.vm_status("minimal")["phase"] == "Stopped", "the phase stays the agent's"
    allocated = cluster.kube.host("h1")["status"]["allocated"]
    assert allocated["cpu"] == 4, "CPU ALLOCATED is the sum of the claims"


def test_a_new_size_that_fits_is_claimed_and_recorded_for_the_agent() -> None:
    cluster = Cluster()

    async def main() -> None:
        await three_running(cluster)
        await patch_and_restart(cluster, 5)
        await cluster.controller.check_host("h1")

    asyncio.run(main())
    size = cluster.vm_status("minimal")["placement"]["size"]
    resized = VirtualMachine.model_validate(cluster.kube.vm(f"{NAMESPACE}/minimal"))
    assert size["vcpus"] == 5
    assert size["fingerprint"] == inputs.size_fingerprint(resized.spec)
    assert not inputs.resize_pending(resized), "the agent may start it now"
    assert vcpus_used(cluster) == 8
    assert cluster.kube.host("h1")["status"]["allocated"]["cpu"] == 8
    assert scheduled(cluster, "minimal")["reason"] == "Resized"
    assert cluster.kube.said("minimal", "Resized") == [
        ("Normal", "resized to 5 vCPUs, 1Gi memory on host h1")
    ]


def test_a_refused_resize_is_tried_again_when_capacity_is_freed() -> None:
    cluster = Cluster()

    async def main() -> None:
        await three_running(cluster)
        await patch_and_restart(cluster, 6)
        assert scheduled(cluster, "minimal")["reason"] == "ResizeRefused"
        await cluster.controller.on_vm("DELETED", cluster.kube.vm(f"{NAMESPACE}/b"))

    asyncio.run(main())
    assert scheduled(cluster, "minimal")["reason"] == "Resized"
    assert cluster.vm_status("minimal")["placement"]["size"]["vcpus"] == 6
    assert vcpus_used(cluster) == 2 + 6


def test_a_spec_set_back_to_the_claimed_size_clears_the_refusal() -> None:
    cluster = Cluster()

    async def main() -> None:
        await three_running(cluster)
        await patch_and_restart(cluster, 8)
        cluster.kube.change_vm(f"{NAMESPACE}/minimal", {"spec": {"cpu": {"vcpus": 1}}})
        await cluster.vm_event("minimal")

    asyncio.run(main())
    assert scheduled(cluster, "minimal")["reason"] == "Resized"
    assert (
        scheduled(cluster, "minimal")["message"] == "runs at 1 vCPUs, 1Gi memory, the size claimed"
    )
    assert vcpus_used(cluster) == 4


def test_a_controller_restart_rebuilds_the_claim_at_the_size_claimed_not_the_patched_spec() -> None:
    cluster = Cluster()

    async def main() -> None:
        await three_running(cluster)
        cluster.kube.change_vm(f"{NAMESPACE}/minimal", {"spec": {"cpu": {"vcpus": 8}}})
        restarted = Controller(
            settings=Settings(lease_namespace=LEASE_NAMESPACE),
            kube=cast(Kube, cluster.kube),
            clock=cluster.clock,
        )
        await listing.load(
            restarted,
            hosts=[cluster.kube.host("h1")],
            vms=[cluster.kube.vm(f"{NAMESPACE}/{name}") for name in ("a", "b", "minimal")],
            leases=[lease("h1")],
        )
        assert restarted.state.usage("h1").vcpus == 4, "the domain that runs has 1 vCPU"

    asyncio.run(main())
