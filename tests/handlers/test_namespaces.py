"""Host pools per namespace in the controller (handlers/namespaces.py): the pools loaded at
start-up and followed by watch events and resyncs, and every placement — new VMs and live
migrations — kept to them."""

from __future__ import annotations

import asyncio

from kubevisor.api.wire import HOST_SELECTOR_ANNOTATION
from kubevisor.handlers import listing
from kubevisor.kube.client import Object

from .fake_cluster import NAMESPACE, Cluster, host, job, vm


def namespace(pool: str | None = None) -> Object:
    """The tests' namespace, its host pool annotation `pool` (None: none)."""
    meta: Object = {"name": NAMESPACE}
    if pool is not None:
        meta["annotations"] = {HOST_SELECTOR_ANNOTATION: pool}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def scheduled_message(cluster: Cluster, name: str) -> str:
    status = cluster.vm_status(name)
    assert status["phase"] == "Unschedulable"
    return str(next(c for c in status["conditions"] if c["type"] == "Scheduled")["message"])


def reserved(obj: Object, *namespaces: str) -> Object:
    obj["spec"]["reservedFor"] = list(namespaces)
    return obj


def test_vms_of_a_namespace_land_only_in_its_pool(cluster: Cluster) -> None:
    async def main() -> None:
        # The big host outside the pool would win the weighing.
        await cluster.start(
            hosts=[
                host("small", labels={"pool": "team-a"}),
                host("big", cpus=64, memory_gib=256, labels={"pool": "team-b"}),
            ],
            vms=[vm("a1"), vm("a2")],
            namespaces=[namespace(pool="pool=team-a")],
        )
        for name in ("a1", "a2"):
            await cluster.vm_event(name)
        assert cluster.claims() == {"default/a1": "small", "default/a2": "small"}

    asyncio.run(main())


def test_a_pool_change_re_places_the_waiting_vms(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1", labels={"pool": "team-b"}), host("h2", labels={"pool": "team-b"})],
            vms=[vm("a")],
            namespaces=[namespace(pool="pool=team-a")],
        )
        await cluster.vm_event("a")
        assert scheduled_message(cluster, "a") == (
            "0/2 hosts fit: 2 outside namespace default's host pool pool=team-a"
        )
        assert cluster.claims() == {}

        # The admin moves the namespace to the other pool: its watch event places the VM.
        await cluster.controller.namespaces.on_namespace("MODIFIED", namespace(pool="pool=team-b"))
        assert cluster.vm_status("a")["phase"] == "Scheduled"
        assert cluster.claims()["default/a"] in ("h1", "h2")

    asyncio.run(main())


def test_an_unreadable_pool_places_nothing_and_says_why(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(hosts=[host("h1")], vms=[vm("a")], namespaces=[namespace(pool="pool")])
        await cluster.vm_event("a")
        assert scheduled_message(cluster, "a").startswith(
            "0/1 host fit: 1 namespace default's host pool cannot be read "
            f"(annotation {HOST_SELECTOR_ANNOTATION}='pool': 'pool' is not key=value"
        )

        # The annotation removed (a DELETED namespace event would do the same): any host.
        await cluster.controller.namespaces.on_namespace("MODIFIED", namespace())
        assert cluster.claims() == {"default/a": "h1"}

    asyncio.run(main())


def test_a_resync_reads_a_pool_whose_watch_event_was_lost(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1", labels={"pool": "team-b"})],
            vms=[vm("a")],
            namespaces=[namespace(pool="pool=team-a")],
        )
        await cluster.vm_event("a")
        assert cluster.claims() == {}

        cluster.kube.namespaces[NAMESPACE] = namespace(pool="pool=team-b")
        await listing.resync(cluster.controller)
        assert cluster.claims() == {"default/a": "h1"}

    asyncio.run(main())


def test_a_reserved_host_takes_no_vm_of_another_namespace(cluster: Cluster) -> None:
    async def main() -> None:
        # The big host, reserved for team-x, would win the weighing.
        await cluster.start(
            hosts=[host("open"), reserved(host("big", cpus=64, memory_gib=256), "team-x")],
            vms=[vm("a"), vm("b", memory="16Gi")],
        )
        await cluster.vm_event("a")
        assert cluster.claims() == {"default/a": "open"}
        await cluster.vm_event("b")
        assert scheduled_message(cluster, "b") == (
            "0/2 hosts fit: 1 insufficient memory (need 16Gi, best has 15Gi free), "
            "1 reserved for namespace team-x"
        )

        # The admin adds the namespace to the host's reservation: its event places the VM.
        await cluster.controller.on_host(
            "MODIFIED",
            cluster.kube.add_host(
                reserved(host("big", cpus=64, memory_gib=256), "team-x", NAMESPACE)
            ),
        )
        assert cluster.claims()["default/b"] == "big"

    asyncio.run(main())


def test_a_migration_stays_in_the_pool(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[
                host("a1", labels={"pool": "team-a"}),
                host("a2", labels={"pool": "team-a"}),
                host("big", cpus=64, memory_gib=256, labels={"pool": "team-b"}),
            ],
            vms=[vm("v", host="a1"), vm("w", host="a1")],
            namespaces=[namespace(pool="pool=team-a")],
        )
        await cluster.create_job(job("j1", "v"))
        assert cluster.job_status("j1")["target"] == "a2"

        await cluster.create_job(job("j2", "w", target="big"))
        status = cluster.job_status("j2")
        assert status["phase"] == "Failed"
        assert status["reason"] == (
            "host big cannot take the VM: host big lacks label pool=team-a (it has "
            f"pool=team-b) of namespace default's host pool (annotation {HOST_SELECTOR_ANNOTATION})"
        )

    asyncio.run(main())
