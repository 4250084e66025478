"""The controller process on a real kube-apiserver + etcd: VMs on Networks get distinct
addresses and stable MACs in status.interfaces before they are bound, refusals say why
with the numbers, addresses survive a controller restart, a Network in use waits for its
VMs before it goes, and `kubectl get vm -o wide` shows the address.

The control plane is this module's own (as in test_missing_host_apiserver.py): a second
controller on the session's plane would act on these VMs too. No agent runs: the VMs are
bound and stay Scheduled, which is all the controller's part needs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

import builders
from harness import ManagedProcess, eventually
from kubevisor.core.network import mac
from kubevisor.testbed.controlplane import ControlPlane

from .apiserver import apply, get, own_plane, ready_host

pytestmark = pytest.mark.apiserver

NAMESPACE = "team"
TUNNEL = "192.168.50.1"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with own_plane(tmp_path_factory.mktemp("networks-plane")) as started:
        started.kubectl("create", "namespace", NAMESPACE)
        ready_host(started, "h1", cpus=16, memory="16Gi", network={"tunnelEndpoint": TUNNEL})
        yield started


def network(name: str, start: str, end: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "Network",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "type": "overlay",
            "subnet": {"cidr": "10.0.0.0/24", "allocationPools": [{"start": start, "end": end}]},
        },
    }


def vm(name: str, net: str, **interface: Any) -> dict[str, Any]:
    return builders.vm(
        name,
        namespace=NAMESPACE,
        runStrategy="Always",
        memory={"size": "64Mi"},
        networks=[{"name": "eth0", "network": net, **interface}],
    )


def status(plane: ControlPlane, name: str) -> dict[str, Any]:
    return dict(get(plane, "vm", name, "-n", NAMESPACE).get("status") or {})


def bound(plane: ControlPlane, name: str) -> tuple[str, str, list[str]]:
    """(host, MAC, addresses) once the VM is bound with its interfaces."""

    def check() -> tuple[str, str, list[str]] | None:
        found = status(plane, name)
        interfaces = found.get("interfaces") or []
        if not found.get("host") or not interfaces:
            return None
        return found["host"], interfaces[0]["macAddress"], interfaces[0]["ipAddresses"]

    return eventually(check, timeout=60, what=f"VM {name} bound with its interfaces")


def scheduled(plane: ControlPlane, name: str) -> tuple[str, str, str]:
    def check() -> tuple[str, str, str] | None:
        found = [c for c in status(plane, name).get("conditions") or [] if c["type"] == "Scheduled"]
        return (found[0]["status"], found[0]["reason"], found[0]["message"]) if found else None

    return eventually(check, timeout=60, what=f"VM {name}'s Scheduled condition")


def uid(plane: ControlPlane, name: str) -> str:
    return str(get(plane, "vm", name, "-n", NAMESPACE)["metadata"]["uid"])


def test_two_vms_get_distinct_addresses_and_stable_macs_shown_by_get_wide(
    plane: ControlPlane, controller: ManagedProcess
) -> None:
    apply(plane, network("blue", "10.0.0.10", "10.0.0.50"))
    apply(plane, vm("a", "blue"))
    a = bound(plane, "a")
    apply(plane, vm("b", "blue", macAddress="52:54:00:00:00:0b"))
    b = bound(plane, "b")
    # a first (10.0.0.10), h1's DHCP server next, then b.
    assert a == ("h1", mac.derived(uid(plane, "a"), "eth0"), ["10.0.0.10"])
    assert b == ("h1", "52:54:00:00:00:0b", ["10.0.0.12"])
    wide = plane.kubectl("get", "vm", "-n", NAMESPACE, "-o", "wide").stdout
    header, *rows = wide.splitlines()
    # Cells line up with the header; some are empty.
    at = next(m.start() for m in re.finditer(r"\S+", header) if m.group() == "IP")
    shown = {row.split()[0]: row[at:].split()[0] for row in rows}
    assert (shown["a"], shown["b"]) == ("10.0.0.10", "10.0.0.12"), wide

    def counted() -> tuple[int, int, list[dict[str, str]]] | None:
        found = get(plane, "network", "blue", "-n", NAMESPACE).get("status") or {}
        if found.get("used") != 3:
            return None
        return found["used"], found["free"], found["dhcpPorts"]

    assert eventually(counted, timeout=30, what="blue's status counting a, b and h1's port") == (
        3,
        38,
        [{"host": "h1", "ipAddress": "10.0.0.11"}],
    )


def test_a_fixed_address_taken_and_an_exhausted_pool_leave_the_vm_unplaced(
    plane: ControlPlane, controller: ManagedProcess
) -> None:
    apply(plane, network("small", "10.0.0.10", "10.0.0.12"))
    apply(plane, vm("owner", "small", ipAddress="10.0.0.12"))
    bound(plane, "owner")
    apply(plane, vm("copycat", "small", ipAddress="10.0.0.12"))
    assert scheduled(plane, "copycat") == (
        "False",
        "AddressTaken",
        "interface eth0: network team/small: 10.0.0.12 is taken by team/owner eth0",
    )
    apply(plane, vm("second", "small"))
    bound(plane, "second")  # 10.0.0.11: the DHCP port took 10.0.0.10
    apply(plane, vm("third", "small"))
    assert scheduled(plane, "third") == (
        "False",
        "AddressPoolExhausted",
        "interface eth0: network team/small: no free address (3 of 3 in use)",
    )
    assert status(plane, "third").get("host") is None


def test_addresses_survive_a_controller_restart(
    plane: ControlPlane, controller: ManagedProcess
) -> None:
    apply(plane, network("steady", "10.0.0.100", "10.0.0.120"))
    apply(plane, vm("before", "steady"))
    kept = bound(plane, "before")
    controller.stop()
    controller.start()
    apply(plane, vm("after", "steady"))
    # The restarted controller rebuilt the pool: the next address, not 10.0.0.100 again.
    assert bound(plane, "after")[2] == ["10.0.0.102"]
    assert bound(plane, "before") == kept


def test_a_network_in_use_is_deleted_only_after_its_last_vm(
    plane: ControlPlane, controller: ManagedProcess
) -> None:
    apply(plane, network("doomed", "10.0.0.200", "10.0.0.210"))
    apply(plane, vm("last", "doomed"))
    bound(plane, "last")
    plane.kubectl("delete", "network", "doomed", "-n", NAMESPACE, "--wait=false")

    def waiting() -> tuple[str, str, str] | None:
        found = get(plane, "network", "doomed", "-n", NAMESPACE).get("status") or {}
        ready = [c for c in found.get("conditions") or [] if c["type"] == "Ready"]
        if not ready or ready[0]["reason"] != "InUse":
            return None
        return ready[0]["status"], ready[0]["reason"], ready[0]["message"]

    assert eventually(waiting, timeout=30, what="doomed waiting for its VM") == (
        "False",
        "InUse",
        "deletion waits for the 1 VMs that use it: team/last",
    )
    assert get(plane, "network", "doomed", "-n", NAMESPACE)["metadata"]["finalizers"] == [
        "kubevisor.io/network-protection"
    ]
    plane.kubectl("delete", "vm", "last", "-n", NAMESPACE, "--timeout=60s")

    def gone() -> bool:
        names = plane.kubectl("get", "networks", "-n", NAMESPACE, "-o", "name").stdout
        return "network.kubevisor.io/doomed" not in names.split()

    assert eventually(gone, timeout=30, what="doomed deleted once its VM is")


def test_an_endpoint_slice_follows_the_vms_a_service_selects(
    plane: ControlPlane, controller: ManagedProcess
) -> None:
    apply(plane, network("front", "10.0.0.60", "10.0.0.70"))
    for name, app in (("web1", "web"), ("web2", "web"), ("cache", "db")):
        obj = vm(name, "front")
        obj["metadata"]["labels"] = {"app": app}
        apply(plane, obj)
    web1, web2 = (bound(plane, name)[2][0] for name in ("web1", "web2"))
    bound(plane, "cache")
    apply(plane, service("web", "app=web"))

    def addresses(expected: list[str]) -> bool:
        listing = get(
            plane, "endpointslices", "-n", NAMESPACE, "-l", "kubernetes.io/service-name=web"
        )
        found = sorted(
            address
            for item in listing["items"]
            if item["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
            == "kubevisor.io"
            for endpoint in item.get("endpoints") or []
            for address in endpoint["addresses"]
        )
        return found == expected

    assert eventually(lambda: addresses(sorted([web1, web2])), timeout=30, what="web1, web2")
    plane.kubectl("label", "vm", "web2", "app=db", "--overwrite", "-n", NAMESPACE)
    plane.kubectl("label", "vm", "cache", "app=web", "--overwrite", "-n", NAMESPACE)
    cache = bound(plane, "cache")[2][0]
    assert eventually(lambda: addresses(sorted([web1, cache])), timeout=30, what="web1, cache")
    plane.kubectl("delete", "service", "web", "-n", NAMESPACE)
    assert eventually(lambda: addresses([]), timeout=30, what="the slice gone")


def service(name: str, selector: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "annotations": {"kubevisor.io/vm-selector": selector},
        },
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


def kubevisor_slices(plane: ControlPlane) -> list[str]:
    listing = get(
        plane,
        "endpointslices",
        "-n",
        NAMESPACE,
        "-l",
        "endpointslice.kubernetes.io/managed-by=kubevisor.io",
    )
    return sorted(item["metadata"]["name"] for item in listing["items"])


def test_slices_whose_service_went_while_no_controller_ran_are_deleted_at_its_start(
    plane: ControlPlane, controller: ManagedProcess
) -> None:
    """The testbed's API server runs no garbage collector: a deleted Service's slice stays
    unless the controller deletes it, which it must also do after it missed the event."""
    apply(plane, network("orphans", "10.0.0.80", "10.0.0.90"))
    obj = vm("shop", "orphans")
    obj["metadata"]["labels"] = {"app": "shop"}
    apply(plane, obj)
    bound(plane, "shop")
    for name in ("unannotated", "deleted", "kept"):
        apply(plane, service(name, "app=shop"))
    wanted = ["deleted-kubevisor", "kept-kubevisor", "unannotated-kubevisor"]
    assert eventually(
        lambda: kubevisor_slices(plane) == wanted or None, timeout=30, what="three slices"
    )
    controller.stop()
    plane.kubectl(
        "annotate", "service", "unannotated", "-n", NAMESPACE, "kubevisor.io/vm-selector-"
    )
    plane.kubectl("delete", "service", "deleted", "-n", NAMESPACE)
    assert kubevisor_slices(plane) == wanted
    controller.start()
    assert eventually(
        lambda: kubevisor_slices(plane) == ["kept-kubevisor"] or None,
        timeout=30,
        what="the two orphaned slices deleted",
    )
