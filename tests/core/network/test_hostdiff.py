"""Ordered changes from a host's observed data plane to its desired one (hostdiff)."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from kubevisor.core.network import hostdiff
from kubevisor.core.network.hostdiff import Change
from kubevisor.core.network.hostplan import (
    Bridge,
    DhcpHost,
    DhcpNamespace,
    DhcpServer,
    HostPlan,
    PortSecurity,
    Problem,
    VlanDevice,
    VxlanDevice,
)

A = IPv4Address
BRIDGE = Bridge("kvbr-0a1b2c3d", "uid-blue")
VXLAN = VxlanDevice(
    "kvvx-0a1b2c3d",
    4242,
    A("172.16.0.1"),
    "kvbr-0a1b2c3d",
    "uid-blue",
    frozenset({A("172.16.0.2")}),
)
VLAN = VlanDevice("eth1.100", "eth1", 100, "kvbr-feedbeef", "uid-red")
NAMESPACE = DhcpNamespace(
    "kvdhcp-0a1b2c3d", "kvdh-0a1b2c3d", "kvbr-0a1b2c3d", IPv4Interface("10.20.0.250/24"), "uid-blue"
)
SERVER = DhcpServer(
    "kvdhcp-0a1b2c3d",
    IPv4Network("10.20.0.0/24"),
    A("10.20.0.1"),
    (),
    1450,
    frozenset({DhcpHost("02:00:00:00:00:05", A("10.20.0.5"))}),
)
PORT = PortSecurity("kvt-a", "02:00:00:00:00:05", A("10.20.0.5"))
FULL = HostPlan(
    bridges=frozenset({BRIDGE}),
    vxlans=frozenset({VXLAN}),
    dhcp_namespaces=frozenset({NAMESPACE}),
    dhcp_servers=frozenset({SERVER}),
    ports=frozenset({PORT}),
)


def actions(changes: tuple[Change, ...]) -> list[tuple[str, str]]:
    return [(c.action, type(c.element).__name__) for c in changes]


def test_equal_plans_need_nothing() -> None:
    assert hostdiff.changes(FULL, FULL) == ()


def test_problems_are_not_elements() -> None:
    desired = replace(FULL, problems=(Problem("team/x", "NoVNI", "..."),))
    assert hostdiff.changes(FULL, desired) == ()


def test_a_fresh_host_creates_in_dependency_order() -> None:
    assert actions(hostdiff.changes(HostPlan(), FULL)) == [
        ("add", "Bridge"),
        ("add", "VxlanDevice"),
        ("add", "DhcpNamespace"),
        ("add", "DhcpServer"),
        ("add", "PortSecurity"),
    ]


def test_the_last_vm_gone_removes_in_reverse_order() -> None:
    assert actions(hostdiff.changes(FULL, HostPlan())) == [
        ("remove", "PortSecurity"),
        ("remove", "DhcpServer"),
        ("remove", "DhcpNamespace"),
        ("remove", "VxlanDevice"),
        ("remove", "Bridge"),
    ]


def test_removals_come_before_additions() -> None:
    other = replace(PORT, tap="kvt-b")
    changes = hostdiff.changes(FULL, replace(FULL, ports=frozenset({other})))
    assert [(c.action, c.element) for c in changes] == [("remove", PORT), ("add", other)]


@pytest.mark.parametrize(
    ("before", "after", "recreate"),
    [
        pytest.param(VXLAN, replace(VXLAN, flood=frozenset()), False, id="vxlan-peer-gone"),
        pytest.param(VXLAN, replace(VXLAN, vni=7), True, id="vxlan-new-vni"),
        pytest.param(VXLAN, replace(VXLAN, local=A("172.16.0.9")), True, id="vxlan-new-endpoint"),
        pytest.param(SERVER, replace(SERVER, hosts=frozenset()), False, id="dhcp-hosts-sighup"),
        pytest.param(SERVER, replace(SERVER, gateway=None), True, id="dhcp-options-restart"),
        pytest.param(BRIDGE, replace(BRIDGE, uplink="eth1"), False, id="bridge-uplink-in-place"),
        pytest.param(VLAN, replace(VLAN, bridge="kvbr-x"), True, id="vlan-recreated"),
        pytest.param(
            NAMESPACE,
            replace(NAMESPACE, address=IPv4Interface("10.20.0.9/24")),
            True,
            id="namespace-recreated",
        ),
        pytest.param(PORT, replace(PORT, ip=A("10.20.0.6")), False, id="port-rules-in-place"),
    ],
)
def test_updates(before: hostdiff.Element, after: hostdiff.Element, recreate: bool) -> None:
    observed = _plan_with(before)
    (change,) = hostdiff.changes(observed, _plan_with(after))
    assert (change.action, change.before, change.after) == ("update", before, after)
    assert hostdiff.recreate(change) is recreate


def _plan_with(element: hostdiff.Element) -> HostPlan:
    field = {
        Bridge: "bridges",
        VlanDevice: "vlans",
        VxlanDevice: "vxlans",
        DhcpNamespace: "dhcp_namespaces",
        DhcpServer: "dhcp_servers",
        PortSecurity: "ports",
    }[type(element)]
    return replace(HostPlan(), **{field: frozenset({element})})


def test_flood_delta_follows_peers() -> None:
    after = replace(VXLAN, flood=frozenset({A("172.16.0.3")}))
    assert hostdiff.flood_delta(VXLAN, after) == ({A("172.16.0.3")}, {A("172.16.0.2")})
