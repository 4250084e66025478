"""Namespace quotas in the controller (handlers/quotas.py) on a fake API server: the
issue's scenario (a 2-vCPU quota, three 1-vCPU VMs), raised and lowered limits, the
quota's status, and VMs that a full namespace must not keep down."""

from __future__ import annotations

import asyncio
from typing import Any

from kubevisor.handlers import listing
from kubevisor.handlers.controller import Settings
from kubevisor.kube.client import Object

from .fake_cluster import LEASE_NAMESPACE, NAMESPACE, Cluster, host, job, lease, vm
from .test_migrations import SOURCE_AGENT, TARGET_AGENT
from .test_resizes import patch_and_restart, three_running

FULL = "exceeds quota compute: kubevisor.io/vcpus requested 1, used 2, hard 2"


def resource_quota(name: str = "compute", **hard: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "resourceVersion": "1",
        },
        "spec": {"hard": {f"kubevisor.io/{key.replace('_', '-')}": v for key, v in hard.items()}},
    }


def scheduled(cluster: Cluster, name: str) -> dict[str, Any]:
    return next(c for c in cluster.vm_status(name)["conditions"] if c["type"] == "Scheduled")


def used(cluster: Cluster, name: str = "compute") -> dict[str, str]:
    return dict(cluster.kube.quota(f"{NAMESPACE}/{name}")["status"]["used"])


async def three_in_a_two_vcpu_namespace(cluster: Cluster, **hard: str) -> None:
    await cluster.start(
        hosts=[host("h1", cpus=8)],
        vms=[vm("a"), vm("b"), vm("c")],
        quotas=[resource_quota(vcpus="2", memory="8Gi", **hard)],
    )
    for name in ("a", "b", "c"):
        await cluster.vm_event(name)


async def delete(cluster: Cluster, name: str) -> None:
    """The user deletes a bound VM; its agent removes the domain."""
    key = f"{NAMESPACE}/{name}"
    cluster.kube.change_vm(key, {"metadata": {"deletionTimestamp": "2024-05-01T12:01:00Z"}})
    cluster.kube.agent_vm_status(key, created=False)
    await cluster.vm_event(name)


def test_the_third_1_vcpu_vm_waits_with_the_figures_and_starts_when_one_is_deleted(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await three_in_a_two_vcpu_namespace(cluster)
        assert cluster.claims() == {"default/a": "h1", "default/b": "h1"}
        waiting = cluster.vm_status("c")
        assert waiting["phase"] == "Pending"
        assert (scheduled(cluster, "c")["reason"], scheduled(cluster, "c")["message"]) == (
            "QuotaExceeded",
            FULL,
        )
        assert cluster.kube.said("c", "FailedScheduling") == [("Warning", FULL)]
        assert used(cluster) == {"kubevisor.io/vcpus": "2", "kubevisor.io/memory": "2Gi"}
        await delete(cluster, "a")
        assert cluster.claims() == {"default/b": "h1", "default/c": "h1"}, "c placed by itself"
        assert cluster.vm_status("c")["host"] == "h1"
        assert used(cluster)["kubevisor.io/vcpus"] == "2"

    asyncio.run(main())


def test_raising_the_limit_places_the_waiting_vm_and_lowering_it_stops_nothing(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await three_in_a_two_vcpu_namespace(cluster)
        raised = resource_quota(vcpus="3", memory="8Gi")
        raised["metadata"]["resourceVersion"] = "2"
        await cluster.controller.quotas.on_quota("MODIFIED", raised)
        assert set(cluster.claims()) == {"default/a", "default/b", "default/c"}

        lowered = resource_quota(vcpus="1", memory="8Gi")
        lowered["metadata"]["resourceVersion"] = "3"
        await cluster.controller.quotas.on_quota("MODIFIED", lowered)
        cluster.kube.add_vm(vm("d"))
        await cluster.vm_event("d")
        for name in ("a", "b", "c"):
            await cluster.vm_event(name)

        assert set(cluster.claims()) == {"default/a", "default/b", "default/c"}, "none stopped"
        assert scheduled(cluster, "d")["message"] == (
            "exceeds quota compute: kubevisor.io/vcpus requested 1, used 3, hard 1"
        )

    asyncio.run(main())


def test_a_vm_count_limit_and_a_limit_the_vm_does_not_ask_for(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1", cpus=8)],
            vms=[vm("a"), vm("b", disks=[{"name": "root", "size": "1Gi"}])],
            quotas=[resource_quota(vms="5", local_disk="512Mi")],
        )
        await cluster.vm_event("a")
        await cluster.vm_event("b")
        assert set(cluster.claims()) == {"default/a"}, "a has no disk: the disk limit is moot"
        assert scheduled(cluster, "b")["message"] == (
            "exceeds quota compute: kubevisor.io/local-disk requested 1Gi, used 0Mi, hard 512Mi"
        )
        assert used(cluster) == {"kubevisor.io/vms": "1", "kubevisor.io/local-disk": "0"}

    asyncio.run(main())


def test_status_keeps_the_quota_controllers_keys_and_is_written_only_on_change(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        quota = resource_quota(vcpus="4")
        quota["spec"]["hard"]["pods"] = "10"
        quota["status"] = {"hard": {"pods": "10"}, "used": {"pods": "3"}}
        await cluster.start(hosts=[host("h1")], vms=[vm("a")], quotas=[quota])
        await cluster.vm_event("a")
        await cluster.vm_event("a")
        status = cluster.kube.quota(f"{NAMESPACE}/compute")["status"]
        assert status["used"] == {"pods": "3", "kubevisor.io/vcpus": "1"}
        assert status["hard"] == {"pods": "10", "kubevisor.io/vcpus": "4"}
        # Once at start-up (0 used), once for a's placement; a's second event changes nothing.
        assert cluster.kube.called("apply_quota_status") == ["default/compute"] * 2

    asyncio.run(main())


def test_a_namespace_without_a_quota_on_kubevisor_resources_is_not_limited(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        pods_only = resource_quota()
        pods_only["spec"]["hard"] = {"pods": "0"}
        await cluster.start(hosts=[host("h1")], vms=[vm("a")], quotas=[pods_only])
        await cluster.vm_event("a")
        assert set(cluster.claims()) == {"default/a"}
        assert cluster.kube.called("apply_quota_status") == []

    asyncio.run(main())


def test_deleting_the_quota_places_what_it_kept_out(cluster: Cluster) -> None:
    async def main() -> None:
        await three_in_a_two_vcpu_namespace(cluster)
        gone = cluster.kube.quota(f"{NAMESPACE}/compute")
        await cluster.controller.quotas.on_quota("DELETED", gone)
        assert set(cluster.claims()) == {"default/a", "default/b", "default/c"}

    asyncio.run(main())


def test_a_live_migration_in_a_full_namespace_succeeds_and_counts_once(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")],
            vms=[vm("a", host="h1")],
            quotas=[resource_quota(vcpus="1", vms="1")],
        )
        await cluster.vm_event("a")
        await cluster.create_job(job("j1", "a"))
        assert cluster.claims() == {"default/a": "h1", "migration:default/j1": "h2"}
        cluster.kube.agent_job_status("default/j1", TARGET_AGENT, targetAgent={"ready": True})
        await cluster.job_event("j1")
        cluster.kube.agent_job_status("default/j1", SOURCE_AGENT, transfer={"state": "Running"})
        await cluster.job_event("j1")
        assert used(cluster) == {"kubevisor.io/vcpus": "1", "kubevisor.io/vms": "1"}
        cluster.kube.agent_job_status(
            "default/j1", SOURCE_AGENT, transfer={"state": "Succeeded", "message": "done"}
        )
        await cluster.job_event("j1")
        await cluster.vm_event("a")
        assert cluster.job_status("j1")["phase"] == "Succeeded"
        assert cluster.claims() == {"default/a": "h2"}
        assert used(cluster) == {"kubevisor.io/vcpus": "1", "kubevisor.io/vms": "1"}

    asyncio.run(main())


def test_a_vm_of_a_lost_host_starts_elsewhere_even_over_a_lowered_quota() -> None:
    cluster = Cluster(Settings(lease_namespace=LEASE_NAMESPACE, failover_grace=5.0))

    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")],
            vms=[vm("a", host="h1")],
            quotas=[resource_quota(vcpus="0")],
        )
        await cluster.vm_event("a")
        cluster.clock.advance(60)
        cluster.controller.remember_lease(lease("h2", cluster.clock.now))
        await cluster.controller.check_host("h2")
        await cluster.controller.check_host("h1")
        assert cluster.vm_status("a")["host"] == "h2"
        assert used(cluster) == {"kubevisor.io/vcpus": "1"}, "over the limit, as it was"

    asyncio.run(main())


async def add_quota(cluster: Cluster, obj: Object) -> None:
    """A user applies a ResourceQuota; the controller sees it."""
    stored = cluster.kube.add_quota(obj)
    await cluster.controller.quotas.on_quota("ADDED", stored)


def test_a_resize_counts_the_new_size_its_old_one_set_aside(cluster: Cluster) -> None:
    async def main() -> None:
        await three_running(cluster)  # a (2 vCPUs), b (1), minimal (1): 4 in all
        await add_quota(cluster, resource_quota(vcpus="5"))
        await patch_and_restart(cluster, 3)
        refusal = (
            "resize to 3 vCPUs, 1Gi memory refused: exceeds quota compute: "
            "kubevisor.io/vcpus requested 3, used 3, hard 5"
        )
        assert (
            scheduled(cluster, "minimal")["reason"],
            scheduled(cluster, "minimal")["message"],
        ) == (
            "ResizeRefused",
            refusal,
        )
        assert used(cluster)["kubevisor.io/vcpus"] == "4", "the old size still counts"
        raised = resource_quota(vcpus="6")
        raised["metadata"]["resourceVersion"] = "2"
        await cluster.controller.quotas.on_quota("MODIFIED", raised)
        assert scheduled(cluster, "minimal")["reason"] == "Resized"
        assert used(cluster)["kubevisor.io/vcpus"] == "6", "the new size counts"

    asyncio.run(main())


def test_a_resync_reads_a_quota_whose_events_were_lost(cluster: Cluster) -> None:
    async def main() -> None:
        await three_in_a_two_vcpu_namespace(cluster)
        quota = cluster.kube.quotas[f"{NAMESPACE}/compute"]
        quota["spec"]["hard"]["kubevisor.io/vcpus"] = "3"
        quota["metadata"]["resourceVersion"] = "2"
        await listing.resync(cluster.controller)
        assert set(cluster.claims()) == {"default/a", "default/b", "default/c"}
        del cluster.kube.quotas[f"{NAMESPACE}/compute"]
        await listing.resync(cluster.controller)
        assert cluster.controller.quotas.quotas == {}

    asyncio.run(main())
