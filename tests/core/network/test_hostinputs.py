"""The host plan's inputs read out of the API's objects (core/network/hostinputs.py)."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.network import Network as NetworkObject
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.domain.host import Nic
from kubevisor.core.network import hostinputs, hostplan
from kubevisor.core.network.hostinputs import HostSide
from kubevisor.core.network.hostplan import HostFacts, Interface, Network, NetworkType

from .test_hostplan import BLUE, BLUE_UID

A = IPv4Address
RED_UID = "feedbeef-1111-4222-8333-444455556666"
VM_UID = "6f1c1f9e-8a3b-4c55-9a55-0d7b5c2d1e01"


def network_object(
    name: str,
    spec: dict[str, Any],
    *,
    uid: str | None = BLUE_UID,
    status: dict[str, Any] | None = None,
) -> NetworkObject:
    metadata: dict[str, Any] = {"namespace": "team", "name": name}
    if uid is not None:
        metadata["uid"] = uid
    return NetworkObject.model_validate({"metadata": metadata, "spec": spec, "status": status})


OVERLAY_SPEC = {
    "type": "overlay",
    "subnet": {"cidr": "10.20.0.0/24", "gateway": "10.20.0.1", "dnsServers": ["10.20.0.2"]},
}
PROVIDER_SPEC = {
    "type": "provider",
    "provider": {"physicalNetwork": "datacentre", "vlan": 100},
    "subnet": {"cidr": "192.168.50.0/24"},
    "dhcp": False,
}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(
            network_object("blue", OVERLAY_SPEC, status={"vni": 4242}),
            BLUE,
            id="overlay-vni-from-status",
        ),
        pytest.param(
            network_object("blue", {**OVERLAY_SPEC, "overlay": {"vni": 7}}),
            replace(BLUE, vni=7),
            id="overlay-vni-from-spec-before-the-controller-wrote-status",
        ),
        pytest.param(
            network_object("red", PROVIDER_SPEC, uid=RED_UID),
            Network(
                name="team/red",
                uid=RED_UID,
                type=NetworkType.PROVIDER,
                subnet=IPv4Network("192.168.50.0/24"),
                dhcp=False,
                physical_network="datacentre",
                vlan=100,
            ),
            id="provider-with-vlan-and-dhcp-off",
        ),
        pytest.param(network_object("blue", OVERLAY_SPEC, uid=None), None, id="no-uid"),
    ],
)
def test_network(obj: NetworkObject, expected: Network | None) -> None:
    assert hostinputs.network(obj) == expected


def vm(interfaces: list[dict[str, Any]]) -> VirtualMachine:
    return VirtualMachine.model_validate(
        {
            "metadata": {"namespace": "team", "name": "web", "uid": VM_UID},
            "spec": {
                "memory": {"size": "64Mi"},
                "networks": [{"name": i["name"], "network": i["network"]} for i in interfaces],
            },
            "status": {"host": "h1", "interfaces": interfaces},
        }
    )


ETH0 = {
    "name": "eth0",
    "network": "blue",
    "macAddress": "02:00:00:00:00:05",
    "ipAddresses": ["10.20.0.5"],
}


@pytest.mark.parametrize(
    ("statuses", "reasons"),
    [
        pytest.param([ETH0], [], id="known-network"),
        pytest.param([{**ETH0, "network": "gone"}], ["NetworkNotFound"], id="unknown-network"),
        pytest.param([{**ETH0, "ipAddresses": []}], ["NoAddress"], id="no-address-yet"),
    ],
)
def test_interfaces_from_status(statuses: list[dict[str, Any]], reasons: list[str]) -> None:
    found, problems = hostinputs.interfaces(vm(statuses), {"team/blue": BLUE})
    assert [p.reason for p in problems] == reasons
    assert all(p.vm == "team/web" for p in problems)
    expected = [
        Interface(
            vm="team/web",
            network=BLUE,
            mac="02:00:00:00:00:05",
            ip=A("10.20.0.5"),
            tap=hostinputs.tap_name(VM_UID, "eth0"),
        )
    ]
    assert found == ([] if reasons else expected)


def test_a_vm_without_status_has_no_interfaces() -> None:
    machine = VirtualMachine.model_validate(
        {"metadata": {"uid": VM_UID}, "spec": {"memory": {"size": "64Mi"}}}
    )
    assert hostinputs.interfaces(machine, {}) == ([], [])


def test_nics_plug_into_the_networks_bridge_with_the_planned_tap() -> None:
    """The domain's tap is the port security rules' tap: both come from one derivation."""
    machine = vm([ETH0, {**ETH0, "name": "eth1", "network": "gone"}])
    nics = hostinputs.nics(machine, {"team/blue": BLUE})
    tap = hostinputs.tap_name(VM_UID, "eth0")
    assert nics == {"eth0": Nic(bridge="kvbr-0a1b2c3d", mac="02:00:00:00:00:05", tap=tap)}
    plan = hostplan.desired(
        hostinputs.interfaces(machine, {"team/blue": BLUE})[0], HostFacts(tunnel_ip=A("172.16.0.1"))
    )
    assert {p.tap for p in plan.ports} == {tap}


@pytest.mark.parametrize(
    ("uid", "interface"),
    [
        pytest.param(VM_UID, "eth0", id="ordinary"),
        pytest.param(
            "x", "a-very-long-interface-name-of-sixty-three-characters-at-most-ok", id="long"
        ),
    ],
)
def test_tap_names_are_linux_names_and_stable(uid: str, interface: str) -> None:
    tap = hostinputs.tap_name(uid, interface)
    assert tap.startswith("kvt-")
    assert len(tap) == hostplan.IFNAMSIZ
    assert tap == hostinputs.tap_name(uid, interface)
    assert tap != hostinputs.tap_name(uid, interface + "x")


def host(
    name: str, *, endpoint: str | None = None, mappings: list[dict[str, str]] | None = None
) -> HypervisorHost:
    status = {"network": {"tunnelEndpoint": endpoint}} if endpoint else None
    return HypervisorHost.model_validate(
        {"metadata": {"name": name}, "spec": {"networkMappings": mappings or []}, "status": status}
    )


def test_facts() -> None:
    side = HostSide(host="h1", tunnel_ip=A("172.16.0.1"), underlay_mtu=9000, namespace_prefix="t-")
    hosts = [
        host(
            "h1", endpoint="172.16.0.1", mappings=[{"physicalNetwork": "dc", "interface": "eth1"}]
        ),
        host(
            "h2", endpoint="172.16.0.2", mappings=[{"physicalNetwork": "dc", "interface": "eth9"}]
        ),
        host("h3"),
    ]
    networks = [
        network_object(
            "blue",
            OVERLAY_SPEC,
            status={
                "dhcpPorts": [
                    {"host": "h2", "ipAddress": "10.20.0.249"},
                    {"host": "h1", "ipAddress": "10.20.0.250"},
                ]
            },
        ),
        network_object("red", PROVIDER_SPEC, uid=RED_UID),
    ]
    assert hostinputs.facts(side, hosts=hosts, networks=networks) == HostFacts(
        mappings={"dc": "eth1"},
        tunnel_ip=A("172.16.0.1"),
        peers=frozenset({A("172.16.0.2")}),
        dhcp_addresses={BLUE_UID: A("10.20.0.250")},
        underlay_mtu=9000,
        namespace_prefix="t-",
    )


def test_facts_of_a_host_not_registered_yet() -> None:
    assert hostinputs.facts(HostSide(host="h1"), hosts=[], networks=[]) == HostFacts()
