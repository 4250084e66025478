"""The controller's network wiring (handlers/networks.py) on a fake API server: VMs get
addresses and MACs before they are bound, refusals leave them unplaced with the reason,
the allocators are rebuilt from the statuses, Networks carry their status and a
finalizer while VMs use them."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from kubevisor.core.network import mac
from kubevisor.handlers.networks import FINALIZER

from .fake_cluster import NAMESPACE, Cluster, job, vm
from .fake_cluster import host as plain_host

DERIVED_A = mac.derived("uid-a", "eth0")


def host(name: str, **more: Any) -> dict[str, Any]:
    """A host whose agent reports a tunnel endpoint (overlay Networks need one)."""
    obj = plain_host(name, **more)
    obj["status"]["network"] = {"tunnelEndpoint": f"192.168.0.{len(name)}"}
    return obj


def network(
    name: str = "blue",
    *,
    cidr: str = "10.0.0.0/24",
    pool: tuple[str, str] | None = ("10.0.0.10", "10.0.0.20"),
    overlay: dict[str, Any] | None = None,
    dhcp: bool = True,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    subnet: dict[str, Any] = {"cidr": cidr}
    if pool is not None:
        subnet["allocationPools"] = [{"start": pool[0], "end": pool[1]}]
    obj: dict[str, Any] = {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "Network",
        "metadata": {"name": name, "namespace": NAMESPACE, "generation": 1},
        "spec": {"type": "overlay", "overlay": overlay or {}, "subnet": subnet, "dhcp": dhcp},
    }
    if status is not None:
        obj["status"] = status
    return obj


def on(net: str = "blue", interface: str = "eth0", **more: Any) -> dict[str, Any]:
    return {"name": interface, "network": net, **more}


def interfaces(cluster: Cluster, name: str) -> list[tuple[str, str, str, list[str]]]:
    return [
        (i["name"], i["network"], i["macAddress"], i["ipAddresses"])
        for i in cluster.vm_status(name).get("interfaces") or []
    ]


def condition(status: dict[str, Any], type_: str) -> tuple[str, str, str]:
    (found,) = [c for c in status.get("conditions") or [] if c["type"] == type_]
    return found["status"], found["reason"], found["message"]


def net_status(cluster: Cluster, name: str = "blue") -> dict[str, Any]:
    return dict(cluster.kube.network(f"{NAMESPACE}/{name}").get("status") or {})


async def network_event(cluster: Cluster, name: str = "blue") -> None:
    await cluster.controller.networks.on_network(
        "MODIFIED", cluster.kube.network(f"{NAMESPACE}/{name}")
    )


async def delete_vm(cluster: Cluster, name: str) -> None:
    """A user deletes the VM: its finalizer goes (the agent reported the domain gone),
    then the API server removes it and the watch says so."""
    stored = cluster.kube.vms[f"{NAMESPACE}/{name}"].obj
    stored["metadata"]["deletionTimestamp"] = "2024-05-01T12:05:00Z"
    stored.setdefault("status", {})["created"] = False
    await cluster.vm_event(name)
    gone = cluster.kube.vm(f"{NAMESPACE}/{name}")
    assert not gone["metadata"].get("finalizers")
    del cluster.kube.vms[f"{NAMESPACE}/{name}"]
    await cluster.controller.on_vm("DELETED", gone)


def test_two_vms_on_one_network_get_distinct_addresses_stable_macs_and_a_dhcp_port(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1")],
            vms=[vm("a", networks=[on()]), vm("b", networks=[on(macAddress="52:54:00:00:00:0b")])],
            networks=[network()],
        )
        await network_event(cluster)
        await cluster.vm_event("a")
        await cluster.vm_event("b")

    asyncio.run(main())
    assert interfaces(cluster, "a") == [("eth0", "blue", DERIVED_A, ["10.0.0.10"])]
    assert interfaces(cluster, "b") == [("eth0", "blue", "52:54:00:00:00:0b", ["10.0.0.12"])]
    assert cluster.vm_status("a")["host"] == "h1"
    # The interfaces were written before the bind: the agent never sees a VM without them.
    calls = [call for call in cluster.kube.calls if call[1] == "default/a"]
    assert [c for c, _ in calls][:3] == ["apply_vm_interfaces", "apply_vm_status", "patch_vm"]
    status = net_status(cluster)
    assert status["dhcpPorts"] == [{"host": "h1", "ipAddress": "10.0.0.11"}]
    assert (status["used"], status["free"], status["vni"]) == (3, 8, 4096)
    assert condition(status, "Ready") == ("True", "Ready", "3 of 11 addresses in use")
    assert FINALIZER in cluster.kube.network("default/blue")["metadata"]["finalizers"]


def test_the_interfaces_survive_the_controllers_other_status_writes_and_a_new_placement(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")], vms=[vm("a", networks=[on()])], networks=[network()]
        )
        await network_event(cluster)
        await cluster.vm_event("a")
        before = interfaces(cluster, "a")
        # The controller unbinds it (as a failover does) with its own field manager ...
        await cluster.controller.write_vm_status(cluster.kube.vm("default/a"), binding=None)
        assert interfaces(cluster, "a") == before
        assert "host" not in cluster.vm_status("a")
        # ... and places it again: the same address and MAC, no new write of them.
        cluster.controller.state.release("default/a")
        writes = cluster.kube.called("apply_vm_interfaces")
        await cluster.vm_event("a")
        assert cluster.kube.called("apply_vm_interfaces") == writes
        assert interfaces(cluster, "a") == before

    asyncio.run(main())


@pytest.mark.parametrize(
    ("nets", "reason", "message"),
    [
        pytest.param(
            [on(ipAddress="10.0.0.10")],
            "AddressTaken",
            "interface eth0: network default/blue: 10.0.0.10 is taken by default/first eth0",
            id="fixed-address-taken-names-its-owner",
        ),
        pytest.param(
            [on(), on(interface="eth1"), on(interface="eth2")],
            "AddressPoolExhausted",
            "interface eth2: network default/blue: no free address (4 of 4 in use)",
            id="pool-exhausted-says-the-numbers",
        ),
        pytest.param(
            [on(ipAddress="10.0.0.99")],
            "AddressOutsidePools",
            "interface eth0: network default/blue: 10.0.0.99 is outside its allocation pools "
            "(10.0.0.10-10.0.0.13)",
            id="fixed-address-outside-the-pools",
        ),
        pytest.param(
            [on("green")],
            "NetworkNotFound",
            "interface eth0: network default/green does not exist",
            id="network-missing",
        ),
    ],
)
def test_a_vm_whose_addresses_cannot_be_had_is_not_placed_and_says_why(
    cluster: Cluster, nets: list[dict[str, Any]], reason: str, message: str
) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1")],
            vms=[vm("first", networks=[on()]), vm("second", networks=nets)],
            networks=[network(pool=("10.0.0.10", "10.0.0.13"))],
        )
        await cluster.vm_event("first")
        await cluster.vm_event("second")

    asyncio.run(main())
    status = cluster.vm_status("second")
    assert (status["phase"], status.get("host")) == ("Unschedulable", None)
    assert condition(status, "Scheduled") == ("False", reason, message)
    assert cluster.claims() == {"default/first": "h1"}
    assert "interfaces" not in status
    # Nothing of the refused VM stays taken: first's address and h1's DHCP port only.
    assert net_status(cluster)["used"] == 2


def test_a_refused_vm_is_placed_once_a_vm_gives_its_address_back(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1")],
            vms=[vm("first", networks=[on()]), vm("second", networks=[on()])],
            networks=[network(pool=("10.0.0.10", "10.0.0.11"))],
        )
        await cluster.vm_event("first")
        await cluster.vm_event("second")
        assert cluster.vm_status("second")["phase"] == "Unschedulable"
        await delete_vm(cluster, "first")

    asyncio.run(main())
    assert interfaces(cluster, "second")[0][3] == ["10.0.0.10"]
    assert cluster.vm_status("second")["host"] == "h1"


def test_a_restart_holds_what_the_statuses_record_and_reports_conflicts(
    cluster: Cluster,
) -> None:
    recorded = {
        "host": "h1",
        "interfaces": [
            {
                "name": "eth0",
                "network": "blue",
                "macAddress": DERIVED_A,
                "ipAddresses": ["10.0.0.10"],
            }
        ],
    }
    a = vm("a", host="h1", networks=[on()])
    a["status"].update(copy.deepcopy(recorded))
    # A hand edit recorded a's address and MAC for c too.
    c = vm("c", host="h1", networks=[on()])
    c["status"].update(copy.deepcopy(recorded))
    ports = {"dhcpPorts": [{"host": "h1", "ipAddress": "10.0.0.11"}], "vni": 5000}

    async def main() -> None:
        await cluster.start(
            hosts=[host("h1")],
            vms=[a, c, vm("b", networks=[on()])],
            networks=[network(status=ports)],
        )
        await network_event(cluster)
        await cluster.vm_event("b")

    asyncio.run(main())
    assert interfaces(cluster, "b")[0][3] == ["10.0.0.12"]
    status = net_status(cluster)
    assert status["vni"] == 5000
    assert status["dhcpPorts"] == [{"host": "h1", "ipAddress": "10.0.0.11"}]
    assert condition(status, "AddressConflict") == (
        "True",
        "AddressConflict",
        f"MAC address {DERIVED_A} is already default/a eth0's in the cluster; "
        "default/c eth0 records 10.0.0.10: network default/blue: 10.0.0.10 is taken by "
        "default/a eth0",
    )


def test_a_network_in_use_waits_for_its_vms_before_it_goes(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1")],
            vms=[vm("a", networks=[on()]), vm("late", networks=[on()])],
            networks=[network()],
        )
        await network_event(cluster)
        await cluster.vm_event("a")
        stored = cluster.kube.networks["default/blue"].obj
        stored["metadata"]["deletionTimestamp"] = "2024-05-01T12:05:00Z"
        await network_event(cluster)
        status = net_status(cluster)
        assert condition(status, "Ready") == (
            "False",
            "InUse",
            "deletion waits for the 1 VMs that use it: default/a",
        )
        # No new VM lands on a Network being deleted.
        await cluster.vm_event("late")
        assert condition(cluster.vm_status("late"), "Scheduled") == (
            "False",
            "NetworkNotFound",
            "interface eth0: network default/blue is being deleted",
        )
        await delete_vm(cluster, "a")
        assert "default/blue" not in cluster.kube.networks

    asyncio.run(main())


def test_a_network_nobody_uses_carries_no_finalizer_and_its_dhcp_ports_follow_the_vms(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1", cpus=1), host("h2", cpus=1)],
            vms=[vm("a", networks=[on()]), vm("b", networks=[on()])],
            networks=[network()],
        )
        await network_event(cluster)
        assert not cluster.kube.network("default/blue")["metadata"].get("finalizers")
        await cluster.vm_event("a")
        await cluster.vm_event("b")
        hosts = {p["host"] for p in net_status(cluster)["dhcpPorts"]}
        assert hosts == {"h1", "h2"}
        await delete_vm(cluster, "a")
        left = cluster.vm_status("b")["host"]
        assert [p["host"] for p in net_status(cluster)["dhcpPorts"]] == [left]
        await delete_vm(cluster, "b")
        assert net_status(cluster)["dhcpPorts"] == []
        assert net_status(cluster)["used"] == 0
        assert not cluster.kube.network("default/blue")["metadata"].get("finalizers")

    asyncio.run(main())


def test_an_overlay_whose_vni_another_network_holds_is_not_ready_and_takes_no_vm(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1")],
            vms=[vm("a", networks=[on("red")])],
            networks=[network(overlay={"vni": 4096}), network("red", overlay={"vni": 4096})],
        )
        await network_event(cluster, "red")
        await cluster.vm_event("a")

    asyncio.run(main())
    assert condition(net_status(cluster, "red"), "Ready") == (
        "False",
        "VniTaken",
        "VNI 4096 is network default/blue's",
    )
    assert condition(cluster.vm_status("a"), "Scheduled") == (
        "False",
        "VniTaken",
        "interface eth0: network default/red has no VNI: VNI 4096 is network default/blue's",
    )


def vm_on_h1() -> dict[str, Any]:
    """VM a bound to h1 with 10.0.0.10 on blue."""
    obj = vm("a", host="h1", networks=[on()])
    obj["status"]["interfaces"] = [
        {"name": "eth0", "network": "blue", "macAddress": DERIVED_A, "ipAddresses": ["10.0.0.10"]}
    ]
    return obj


def test_a_live_migration_goes_only_to_a_host_that_can_carry_the_vms_overlay(
    cluster: Cluster,
) -> None:
    on_h1 = vm_on_h1()

    async def main() -> None:
        # h2 would win on free memory, but its agent reports no tunnel endpoint.
        await cluster.start(
            hosts=[host("h1"), plain_host("h2", memory_gib=64), host("h3")],
            vms=[on_h1],
            networks=[network()],
        )
        await cluster.create_job(job("j1", "a"))

    asyncio.run(main())
    assert cluster.job_status("j1")["target"] == "h3"


TARGET_AGENT = "kubevisor-agent-target"
SOURCE_AGENT = "kubevisor-agent-source"


def ports(cluster: Cluster) -> dict[str, str]:
    return {p["host"]: p["ipAddress"] for p in net_status(cluster).get("dhcpPorts") or []}


async def _preparing(cluster: Cluster, *, pool: tuple[str, str] = ("10.0.0.10", "10.0.0.20")):
    """VM a on h1 (10.0.0.10, h1's DHCP port 10.0.0.11), job j1 moving it to h2."""
    on_h1 = vm_on_h1()
    await cluster.start(hosts=[host("h1"), host("h2")], vms=[on_h1], networks=[network(pool=pool)])
    await network_event(cluster)
    assert ports(cluster) == {"h1": "10.0.0.11"}
    await cluster.create_job(job("j1", "a"))


def test_a_migration_target_gets_its_dhcp_port_before_the_job_goes_preparing(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await _preparing(cluster)
        assert cluster.job_status("j1")["phase"] == "Preparing"
        assert ports(cluster) == {"h1": "10.0.0.11", "h2": "10.0.0.12"}
        # The target's agent prepares on the job's Preparing: the port is written first.
        writes = [m for m, _ in cluster.kube.calls if m in ("apply_network_status", "patch_job")]
        assert writes[-2:] == ["apply_network_status", "patch_job"]
        # Any event of the Network or the VM meanwhile keeps it.
        await network_event(cluster)
        await cluster.vm_event("a")
        assert ports(cluster) == {"h1": "10.0.0.11", "h2": "10.0.0.12"}
        assert net_status(cluster)["used"] == 3

    asyncio.run(main())


@pytest.mark.parametrize(
    ("transfer", "kept"),
    [
        pytest.param("Succeeded", {"h2": "10.0.0.12"}, id="moved-the-source-port-goes"),
        pytest.param("Failed", {"h1": "10.0.0.11"}, id="failed-the-target-port-goes"),
        pytest.param("Cancelled", {"h1": "10.0.0.11"}, id="cancelled-the-target-port-goes"),
    ],
)
def test_after_the_migration_only_the_host_the_vm_runs_on_keeps_its_dhcp_port(
    cluster: Cluster, transfer: str, kept: dict[str, str]
) -> None:
    async def main() -> None:
        await _preparing(cluster)
        cluster.kube.agent_job_status("default/j1", TARGET_AGENT, targetAgent={"ready": True})
        await cluster.job_event("j1")
        cluster.kube.agent_job_status("default/j1", SOURCE_AGENT, transfer={"state": "Running"})
        await cluster.job_event("j1")
        assert ports(cluster) == {"h1": "10.0.0.11", "h2": "10.0.0.12"}
        cluster.kube.agent_job_status("default/j1", SOURCE_AGENT, transfer={"state": transfer})
        await cluster.job_event("j1")
        assert cluster.job_status("j1")["phase"] == transfer
        assert ports(cluster) == kept
        # The moved VM's watch event (or the unmoved one's) changes nothing more.
        await cluster.vm_event("a")
        await cluster.job_event("j1")
        assert ports(cluster) == kept
        assert interfaces(cluster, "a") == [("eth0", "blue", DERIVED_A, ["10.0.0.10"])]

    asyncio.run(main())


def test_a_migration_whose_target_can_get_no_dhcp_port_fails_and_takes_nothing(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await _preparing(cluster, pool=("10.0.0.10", "10.0.0.11"))
        status = cluster.job_status("j1")
        assert (status["phase"], status["reason"]) == (
            "Failed",
            "host h2 cannot take the VM: the DHCP server of host h2: "
            "network default/blue: no free address (2 of 2 in use)",
        )
        assert cluster.claims() == {"default/a": "h1"}
        assert ports(cluster) == {"h1": "10.0.0.11"}

    asyncio.run(main())


def test_a_restarted_controller_keeps_the_dhcp_port_of_a_migration_in_flight(
    cluster: Cluster,
) -> None:
    on_h1 = vm_on_h1()
    recorded = {
        "dhcpPorts": [
            {"host": "h1", "ipAddress": "10.0.0.11"},
            {"host": "h2", "ipAddress": "10.0.0.12"},
        ]
    }
    preparing = job("j1", "a", status={"phase": "Preparing", "source": "h1", "target": "h2"})

    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")],
            vms=[on_h1],
            jobs=[preparing],
            networks=[network(status=recorded)],
        )
        await network_event(cluster)
        await cluster.vm_event("a")
        assert ports(cluster) == {"h1": "10.0.0.11", "h2": "10.0.0.12"}
        cluster.kube.agent_job_status(
            "default/j1", TARGET_AGENT, targetAgent={"ready": False, "message": "no disk"}
        )
        await cluster.job_event("j1")
        assert cluster.job_status("j1")["phase"] == "Failed"
        assert ports(cluster) == {"h1": "10.0.0.11"}

    asyncio.run(main())
