"""A host's desired data plane from its VMs' interfaces and its facts (core/network/hostplan.py)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from kubevisor.core.network import hostplan
from kubevisor.core.network.hostplan import (
    Bridge,
    DhcpHost,
    DhcpNamespace,
    DhcpServer,
    HostFacts,
    HostPlan,
    Interface,
    Network,
    NetworkType,
    PortSecurity,
    VlanDevice,
    VxlanDevice,
)

A = IPv4Address
BLUE_UID = "0a1b2c3d-1111-4222-8333-444455556666"
RED_UID = "feedbeef-1111-4222-8333-444455556666"

BLUE = Network(
    name="team/blue",
    uid=BLUE_UID,
    type=NetworkType.OVERLAY,
    subnet=IPv4Network("10.20.0.0/24"),
    gateway=A("10.20.0.1"),
    dns_servers=(A("10.20.0.2"),),
    vni=4242,
)
RED = Network(
    name="ops/red",
    uid=RED_UID,
    type=NetworkType.PROVIDER,
    subnet=IPv4Network("192.168.50.0/24"),
    physical_network="datacentre",
    vlan=100,
)
FLAT = replace(RED, name="ops/flat", uid="f1a7f1a7-0000", vlan=None)

HOST = HostFacts(
    mappings={"datacentre": "eth1"},
    tunnel_ip=A("172.16.0.1"),
    peers=frozenset({A("172.16.0.1"), A("172.16.0.2"), A("172.16.0.3")}),
    dhcp_addresses={BLUE_UID: A("10.20.0.250"), RED_UID: A("192.168.50.250")},
)


def nic(network: Network, vm: str, ip: str, *, mac: str = "", tap: str = "") -> Interface:
    index = int(ip.rsplit(".", 1)[1])
    return Interface(
        vm=vm,
        network=network,
        mac=mac or f"02:00:00:00:00:{index:02x}",
        ip=A(ip),
        tap=tap or f"kvt-{vm.split('/')[1]}"[:15],
    )


def test_nothing_bound_needs_nothing() -> None:
    assert hostplan.desired([], HOST) == HostPlan()


def test_overlay_network() -> None:
    plan = hostplan.desired(
        [nic(BLUE, "team/a", "10.20.0.5"), nic(BLUE, "team/b", "10.20.0.6")], HOST
    )
    assert plan.bridges == {Bridge("kvbr-0a1b2c3d", BLUE_UID)}
    assert plan.vxlans == {
        VxlanDevice(
            name="kvvx-0a1b2c3d",
            vni=4242,
            local=A("172.16.0.1"),
            bridge="kvbr-0a1b2c3d",
            network=BLUE_UID,
            flood=frozenset({A("172.16.0.2"), A("172.16.0.3")}),
            port=4789,
        )
    }
    assert plan.vlans == frozenset()
    assert plan.dhcp_namespaces == {
        DhcpNamespace(
            name="kvdhcp-0a1b2c3d",
            veth="kvdh-0a1b2c3d",
            bridge="kvbr-0a1b2c3d",
            address=IPv4Interface("10.20.0.250/24"),
            network=BLUE_UID,
        )
    }
    assert plan.dhcp_servers == {
        DhcpServer(
            namespace="kvdhcp-0a1b2c3d",
            subnet=IPv4Network("10.20.0.0/24"),
            gateway=A("10.20.0.1"),
            dns_servers=(A("10.20.0.2"),),
            mtu=1450,
            hosts=frozenset(
                {
                    DhcpHost("02:00:00:00:00:05", A("10.20.0.5")),
                    DhcpHost("02:00:00:00:00:06", A("10.20.0.6")),
                }
            ),
        )
    }
    assert plan.ports == {
        PortSecurity("kvt-a", "02:00:00:00:00:05", A("10.20.0.5")),
        PortSecurity("kvt-b", "02:00:00:00:00:06", A("10.20.0.6")),
    }
    assert plan.problems == ()


def test_vlan_provider_network() -> None:
    plan = hostplan.desired([nic(RED, "ops/r", "192.168.50.7")], HOST)
    assert plan.bridges == {Bridge("kvbr-feedbeef", RED_UID)}
    assert plan.vlans == {VlanDevice("eth1.100", "eth1", 100, "kvbr-feedbeef", RED_UID)}
    assert plan.vxlans == frozenset()
    (server,) = plan.dhcp_servers
    assert (server.gateway, server.dns_servers, server.mtu) == (None, (), None)


def test_flat_provider_network_enslaves_the_uplink() -> None:
    plan = hostplan.desired([nic(FLAT, "ops/f", "192.168.50.8")], HOST)
    assert plan.bridges == {Bridge("kvbr-f1a7f1a7", FLAT.uid, uplink="eth1")}
    assert plan.vlans == plan.vxlans == frozenset()
    assert [p.reason for p in plan.problems] == ["NoDHCPAddress"]


def test_dhcp_off_means_no_namespace_and_no_server() -> None:
    plan = hostplan.desired([nic(replace(BLUE, dhcp=False), "team/a", "10.20.0.5")], HOST)
    assert plan.dhcp_namespaces == plan.dhcp_servers == frozenset()
    assert len(plan.bridges) == len(plan.vxlans) == len(plan.ports) == 1
    assert plan.problems == ()


def test_a_long_uplink_gets_a_hashed_vlan_name() -> None:
    host = replace(HOST, mappings={"datacentre": "enp129s0f1np1"})
    (vlan,) = hostplan.desired([nic(RED, "ops/r", "192.168.50.7")], host).vlans
    assert vlan.name.startswith("kvvl") and vlan.name.endswith(".100")
    assert len(vlan.name) <= 15 and vlan.uplink == "enp129s0f1np1"


def test_only_this_hosts_vms_are_dhcp_hosts_and_networks_are_separate() -> None:
    plan = hostplan.desired(
        [nic(BLUE, "team/a", "10.20.0.5"), nic(RED, "ops/r", "192.168.50.7")], HOST
    )
    assert {s.namespace: {h.ip for h in s.hosts} for s in plan.dhcp_servers} == {
        "kvdhcp-0a1b2c3d": {A("10.20.0.5")},
        "kvdhcp-feedbeef": {A("192.168.50.7")},
    }
    assert {b.name for b in plan.bridges} == {"kvbr-0a1b2c3d", "kvbr-feedbeef"}


def test_peers_follow_the_host_facts() -> None:
    interfaces = [nic(BLUE, "team/a", "10.20.0.5")]
    alone = hostplan.desired(interfaces, replace(HOST, peers=frozenset()))
    (vxlan,) = alone.vxlans
    assert vxlan.flood == frozenset()


def test_namespace_prefix_names_the_dhcp_namespace() -> None:
    plan = hostplan.desired(
        [nic(BLUE, "team/a", "10.20.0.5")], replace(HOST, namespace_prefix="h2-")
    )
    assert {n.name for n in plan.dhcp_namespaces} == {"h2-0a1b2c3d"}
    assert {s.namespace for s in plan.dhcp_servers} == {"h2-0a1b2c3d"}


@pytest.mark.parametrize(
    ("interfaces", "host", "reason", "vm", "realised"),
    [
        pytest.param(
            [nic(replace(BLUE, vni=None), "team/a", "10.20.0.5")],
            HOST,
            "NoVNI",
            None,
            0,
            id="overlay-without-vni",
        ),
        pytest.param(
            [nic(BLUE, "team/a", "10.20.0.5")],
            replace(HOST, tunnel_ip=None),
            "NoTunnelEndpoint",
            None,
            0,
            id="overlay-without-tunnel-ip",
        ),
        pytest.param(
            [nic(RED, "ops/r", "192.168.50.7")],
            replace(HOST, mappings={}),
            "NoMapping",
            None,
            0,
            id="provider-without-mapping",
        ),
        pytest.param(
            [nic(replace(RED, vlan=4095), "ops/r", "192.168.50.7")],
            HOST,
            "InvalidVLAN",
            None,
            0,
            id="vlan-out-of-range",
        ),
        pytest.param(
            [nic(BLUE, "team/a", "10.99.0.5")],
            HOST,
            "AddressOutsideSubnet",
            "team/a",
            0,
            id="address-outside-subnet",
        ),
        pytest.param(
            [nic(BLUE, "team/a", "10.20.0.5", mac="02:00:00:00:00:0G")],
            HOST,
            "InvalidMAC",
            "team/a",
            0,
            id="bad-mac",
        ),
        pytest.param(
            [nic(BLUE, "team/a", "10.20.0.5", mac="02:AA:00:00:00:05")],
            HOST,
            "InvalidMAC",
            "team/a",
            0,
            id="upper-case-mac-is-not-normalised",
        ),
        pytest.param(
            [nic(BLUE, "team/a", "10.20.0.5", tap="tap with space")],
            HOST,
            "InvalidTap",
            "team/a",
            0,
            id="bad-tap",
        ),
        pytest.param(
            [
                nic(BLUE, "team/a", "10.20.0.5", tap="t1"),
                nic(BLUE, "team/b", "10.20.0.6", tap="t1"),
            ],
            HOST,
            "DuplicateTap",
            "team/b",
            1,
            id="tap-used-twice",
        ),
        pytest.param(
            [nic(BLUE, "team/a", "10.20.0.5"), nic(replace(BLUE, vni=7), "team/b", "10.20.0.6")],
            HOST,
            "ConflictingNetwork",
            "team/b",
            1,
            id="one-uid-two-descriptions",
        ),
        pytest.param(
            [
                nic(BLUE, "team/a", "10.20.0.5"),
                nic(replace(BLUE, uid="ffff0000", name="x/y"), "x/b", "10.20.0.6"),
            ],
            HOST,
            "ConflictingNetwork",
            None,
            1,
            id="two-overlays-one-vni",
        ),
        pytest.param(
            [
                nic(RED, "ops/r", "192.168.50.7"),
                nic(replace(RED, uid="ffff0000-x", dhcp=False), "ops/s", "192.168.50.8"),
            ],
            HOST,
            "ConflictingNetwork",
            None,
            1,
            id="two-providers-one-vlan",
        ),
        pytest.param(
            [
                nic(replace(FLAT, dhcp=False), "ops/f", "192.168.50.7"),
                nic(replace(FLAT, uid="ffff0000-y", dhcp=False), "ops/g", "192.168.50.8"),
            ],
            HOST,
            "ConflictingNetwork",
            None,
            1,
            id="two-flat-networks-one-uplink",
        ),
    ],
)
def test_what_cannot_be_realised_is_left_out_and_said(
    interfaces: list[Interface], host: HostFacts, reason: str, vm: str | None, realised: int
) -> None:
    plan = hostplan.desired(interfaces, host)
    assert [(p.reason, p.vm) for p in plan.problems] == [(reason, vm)]
    assert len(plan.bridges) == realised
    assert len(plan.ports) == realised


def test_a_conflict_refuses_the_same_network_whatever_the_order() -> None:
    other = replace(BLUE, uid="ffff0000", name="x/y")
    interfaces = [nic(other, "x/b", "10.20.0.6"), nic(BLUE, "team/a", "10.20.0.5")]
    for order in (interfaces, interfaces[::-1]):
        plan = hostplan.desired(order, HOST)
        assert [p.network for p in plan.problems] == ["x/y"]
        assert "team/blue already holds vni 4242" in plan.problems[0].message


def test_a_network_without_dhcp_address_keeps_its_bridge() -> None:
    plan = hostplan.desired([nic(BLUE, "team/a", "10.20.0.5")], replace(HOST, dhcp_addresses={}))
    assert len(plan.bridges) == len(plan.vxlans) == len(plan.ports) == 1
    assert plan.dhcp_servers == frozenset()
    assert [p.reason for p in plan.problems] == ["NoDHCPAddress"]


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("10.20.0.0", id="network-address"),
        pytest.param("10.20.0.255", id="broadcast"),
        pytest.param("10.21.0.1", id="outside"),
    ],
)
def test_a_dhcp_address_must_be_a_host_of_the_subnet(address: str) -> None:
    host = replace(HOST, dhcp_addresses={BLUE_UID: A(address)})
    plan = hostplan.desired([nic(BLUE, "team/a", "10.20.0.5")], host)
    assert [p.reason for p in plan.problems] == ["InvalidDHCPAddress"]


@pytest.mark.parametrize(
    ("uid", "short"),
    [
        pytest.param("0A1B2C3D-1111-4222", "0a1b2c3d", id="uuid"),
        pytest.param("xyz", hashlib.sha256(b"xyz").hexdigest()[:8], id="not-hex-hashes"),
    ],
)
def test_short_id(uid: str, short: str) -> None:
    assert hostplan.short_id(uid) == short
    assert len(hostplan.short_id(uid)) == 8
