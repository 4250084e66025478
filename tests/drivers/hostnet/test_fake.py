"""The in-memory HostNetwork the agent's unit tests use (drivers/hostnet/fake.py)."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv4Network

from kubevisor.core.network import hostplan
from kubevisor.core.network.hostplan import (
    HostFacts,
    HostPlan,
    Interface,
    Network,
    NetworkType,
    PortSecurity,
    VxlanDevice,
)
from kubevisor.drivers.hostnet.base import HostNetwork
from kubevisor.drivers.hostnet.fake import FakeHostNetwork

A = IPv4Address
NET = Network("t/blue", "0a1b2c3d-0", NetworkType.OVERLAY, IPv4Network("10.0.0.0/24"), vni=9)
HOST = HostFacts(tunnel_ip=A("172.16.0.1"), dhcp_addresses={NET.uid: A("10.0.0.250")})
PLAN = hostplan.desired([Interface("t/a", NET, "02:00:00:00:00:05", A("10.0.0.5"), "kvt-a")], HOST)


def test_converges_like_the_real_one_and_records_it() -> None:
    fake = FakeHostNetwork()
    network: HostNetwork = fake
    first = asyncio.run(network.converge(PLAN))
    assert len(first.applied) == 5 and first.failed == ()
    assert asyncio.run(network.observe()) == PLAN
    assert asyncio.run(network.converge(PLAN)).changed is False
    removed = asyncio.run(network.remove())
    assert [c.action for c in removed.applied] == ["remove"] * 5
    assert fake.state == HostPlan() and len(fake.history) == 3


def test_fails_the_kinds_it_is_told_to() -> None:
    fake = FakeHostNetwork()
    fake.fail(VxlanDevice, "no VXLAN here")
    result = asyncio.run(fake.converge(PLAN))
    assert [(type(f.change.element), f.reason) for f in result.failed] == [
        (VxlanDevice, "no VXLAN here")
    ]
    assert fake.state.vxlans == frozenset()
    assert fake.state.ports == {PortSecurity("kvt-a", "02:00:00:00:00:05", A("10.0.0.5"))}
