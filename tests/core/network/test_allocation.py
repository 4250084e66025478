"""A VM's interfaces on Networks (core.network.allocation): all or nothing, the status as
the memory, refusals naming the interface."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

from kubevisor.api.network import Subnet
from kubevisor.api.virtualmachine import InterfaceStatus, VirtualMachine
from kubevisor.core.network import allocation, mac
from kubevisor.core.network.ipam import AddressPool, Owner, Reason, Refusal
from kubevisor.core.network.mac import MacRegistry

UID = "6f1c1f9e-8a3b-4c55-9a55-0d7b5c2d1e01"


def pools() -> dict[str, AddressPool]:
    def pool(name: str, cidr: str, start: str, end: str) -> AddressPool:
        subnet = Subnet.model_validate(
            {"cidr": cidr, "allocationPools": [{"start": start, "end": end}]}
        )
        return AddressPool.of(name, subnet)

    return {
        "team/blue": pool("team/blue", "10.0.0.0/24", "10.0.0.10", "10.0.0.12"),
        "team/red": pool("team/red", "10.1.0.0/24", "10.1.0.10", "10.1.0.200"),
    }


def vm(
    networks: list[dict[str, Any]],
    *,
    interfaces: list[dict[str, Any]] | None = None,
    name: str = "web",
    uid: str = UID,
) -> VirtualMachine:
    return VirtualMachine.model_validate(
        {
            "metadata": {"namespace": "team", "name": name, "uid": uid},
            "spec": {"memory": {"size": "64Mi"}, "networks": networks},
            "status": {"interfaces": interfaces} if interfaces is not None else None,
        }
    )


def test_each_interface_on_a_network_gets_a_derived_mac_and_the_lowest_address() -> None:
    nets, macs = pools(), MacRegistry()
    machine = vm(
        [
            {"name": "nat"},
            {"name": "eth0", "network": "blue"},
            {"name": "eth1", "network": "red", "ipAddress": "10.1.0.100"},
            {"name": "eth2", "network": "red", "macAddress": "02:00:00:00:00:07"},
        ]
    )
    got = allocation.allocate(machine, pools=nets, macs=macs)
    assert got == (
        InterfaceStatus(
            name="eth0",
            network="blue",
            mac_address=mac.derived(UID, "eth0"),
            ip_addresses=["10.0.0.10"],
        ),
        InterfaceStatus(
            name="eth1",
            network="red",
            mac_address=mac.derived(UID, "eth1"),
            ip_addresses=["10.1.0.100"],
        ),
        InterfaceStatus(
            name="eth2", network="red", mac_address="02:00:00:00:00:07", ip_addresses=["10.1.0.10"]
        ),
    )
    assert allocation.allocate(machine, pools=nets, macs=macs) == got, (
        "asking again changes nothing"
    )
    assert nets["team/blue"].used == 1 and nets["team/red"].used == 2 and len(macs) == 3


def test_what_the_status_records_is_kept_whatever_the_spec_says_now() -> None:
    """After a controller restart (nothing held yet) and after a spec edit: the recorded
    MAC and address stay the interface's."""
    nets, macs = pools(), MacRegistry()
    recorded = {
        "name": "eth0",
        "network": "blue",
        "macAddress": "02:aa:bb:cc:dd:ee",
        "ipAddresses": ["10.0.0.12"],
    }
    machine = vm(
        [{"name": "eth0", "network": "blue", "macAddress": "02:00:00:00:00:01"}],
        interfaces=[recorded],
    )
    (entry,) = allocation.allocate(machine, pools=nets, macs=macs)
    assert (entry.mac_address, entry.ip_addresses) == ("02:aa:bb:cc:dd:ee", ["10.0.0.12"])
    assert nets["team/blue"].holder(IPv4Address("10.0.0.12")) == Owner("team/web", "eth0")


@pytest.mark.parametrize(
    ("networks", "reason", "message"),
    [
        pytest.param(
            [{"name": "eth0", "network": "red"}, {"name": "eth1", "network": "green"}],
            Reason.NETWORK_NOT_FOUND,
            "interface eth1: network team/green does not exist",
            id="network-missing",
        ),
        pytest.param(
            [{"name": "eth0", "network": "red"}, {"name": "eth1", "network": "blue"}],
            Reason.POOL_EXHAUSTED,
            "interface eth1: network team/blue: no free address (3 of 3 in use)",
            id="pool-exhausted",
        ),
        pytest.param(
            [
                {"name": "eth0", "network": "red"},
                {"name": "eth1", "network": "red", "ipAddress": "10.1.0.10"},
            ],
            Reason.ADDRESS_TAKEN,
            "interface eth1: network team/red: 10.1.0.10 is taken by team/other eth0",
            id="fixed-address-taken",
        ),
        pytest.param(
            [
                {"name": "eth0", "network": "red"},
                {"name": "eth1", "network": "red", "macAddress": "02:00:00:00:00:99"},
            ],
            Reason.DUPLICATE_MAC,
            "interface eth1: MAC address 02:00:00:00:00:99 is already team/other eth0's",
            id="mac-duplicate",
        ),
    ],
)
def test_a_refused_interface_leaves_nothing_of_the_vm_allocated(
    networks: list[dict[str, Any]], reason: Reason, message: str
) -> None:
    nets, macs = pools(), MacRegistry()
    other = vm(
        [{"name": "eth0", "network": "red", "macAddress": "02:00:00:00:00:99"}],
        name="other",
        uid="other-uid",
    )
    assert not isinstance(allocation.allocate(other, pools=nets, macs=macs), Refusal)
    for i in range(3):
        filler = vm([{"name": "eth0", "network": "blue"}], name=f"f{i}", uid=f"f{i}")
        if reason == Reason.POOL_EXHAUSTED:
            assert not isinstance(allocation.allocate(filler, pools=nets, macs=macs), Refusal)
    before = (
        {k: dict(p.assignments()) for k, p in nets.items()},
        dict(macs.assignments()),
    )
    refused = allocation.allocate(vm(networks), pools=nets, macs=macs)
    assert isinstance(refused, Refusal) and refused.reason == reason
    assert message in refused.message
    after = ({k: dict(p.assignments()) for k, p in nets.items()}, dict(macs.assignments()))
    assert after == before


def test_release_gives_back_addresses_and_macs_for_the_next_vm() -> None:
    nets, macs = pools(), MacRegistry()
    machine = vm([{"name": "eth0", "network": "blue"}, {"name": "eth1", "network": "red"}])
    got = allocation.allocate(machine, pools=nets, macs=macs)
    assert not isinstance(got, Refusal)
    recorded = vm(
        [{"name": "eth0", "network": "blue"}, {"name": "eth1", "network": "red"}],
        interfaces=[entry.to_wire() for entry in got],
    )
    freed = allocation.release(recorded, pools=nets, macs=macs)
    assert sorted(freed) == [IPv4Address("10.0.0.10"), IPv4Address("10.1.0.10")]
    assert len(macs) == 0 and nets["team/blue"].used == nets["team/red"].used == 0
    (entry,) = allocation.allocate(
        vm([{"name": "eth0", "network": "blue"}], name="next", uid="next"), pools=nets, macs=macs
    )
    assert entry.ip_addresses == ["10.0.0.10"]
