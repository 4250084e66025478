"""Address management of one Network (core.network.ipam): refusals with their numbers, and
properties over random sequences of allocations and releases checked against a brute-force
model: never two owners with one address, always the lowest free address, a pool rebuilt
from the records is the same pool, a released address is handed out again."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from random import Random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubevisor.api.network import Network, Subnet
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.network import ipam
from kubevisor.core.network.ipam import AddressPool, Owner, Reason, Refusal

A = IPv4Address


def blue(**subnet: object) -> AddressPool:
    """Network default/blue: 10.0.0.0/24, gateway .1, one pool .10-.20, .15 reserved."""
    fields = {
        "cidr": "10.0.0.0/24",
        "gateway": "10.0.0.1",
        "allocationPools": [{"start": "10.0.0.10", "end": "10.0.0.20"}],
        "reserved": ["10.0.0.15"],
        **subnet,
    }
    return AddressPool.of("default/blue", Subnet.model_validate(fields))


def vm(name: str, interface: str = "eth0") -> Owner:
    return Owner(f"default/{name}", interface)


def test_capacity_leaves_out_gateway_reserved_network_and_broadcast() -> None:
    assert blue().capacity == 10  # .10-.20 less .15
    whole = blue(allocationPools=[], gateway="10.0.0.1", reserved=[])
    assert whole.capacity == 253  # .1-.254 less the gateway
    edge = blue(cidr="10.0.0.0/30", gateway=None, allocationPools=[], reserved=[])
    assert edge.capacity == 2
    clipped = blue(allocationPools=[{"start": "10.0.0.0", "end": "10.0.0.255"}], reserved=[])
    assert clipped.capacity == 253


def test_allocation_takes_the_lowest_free_address_and_skips_what_is_not_offered() -> None:
    pool = blue()
    got = [pool.allocate(vm(f"v{i}")) for i in range(10)]
    assert got == [A(f"10.0.0.{n}") for n in (10, 11, 12, 13, 14, 16, 17, 18, 19, 20)]
    assert (pool.used, pool.free) == (10, 0)


def test_an_owner_asking_again_keeps_its_address() -> None:
    pool = blue()
    first = pool.allocate(vm("a"))
    assert pool.allocate(vm("a")) == first
    assert pool.allocate(vm("a"), first if isinstance(first, IPv4Address) else None) == first
    assert pool.used == 1


REFUSALS = [
    pytest.param(
        "exhausted",
        None,
        Reason.POOL_EXHAUSTED,
        "network default/blue: no free address (10 of 10 in use)",
        id="pool-exhausted",
    ),
    pytest.param(
        "taken",
        A("10.0.0.12"),
        Reason.ADDRESS_TAKEN,
        "network default/blue: 10.0.0.12 is taken by default/web eth0",
        id="fixed-taken",
    ),
    pytest.param(
        "",
        A("10.0.1.12"),
        Reason.OUTSIDE_SUBNET,
        "network default/blue: 10.0.1.12 is outside its subnet 10.0.0.0/24",
        id="fixed-outside-subnet",
    ),
    pytest.param(
        "",
        A("10.0.0.100"),
        Reason.OUTSIDE_POOLS,
        "network default/blue: 10.0.0.100 is outside its allocation pools (10.0.0.10-10.0.0.20)",
        id="fixed-outside-pools",
    ),
    pytest.param(
        "",
        A("10.0.0.1"),
        Reason.NOT_ASSIGNABLE,
        "network default/blue: 10.0.0.1 is its gateway",
        id="fixed-gateway",
    ),
    pytest.param(
        "",
        A("10.0.0.15"),
        Reason.NOT_ASSIGNABLE,
        "network default/blue: 10.0.0.15 is reserved",
        id="fixed-reserved",
    ),
    pytest.param(
        "",
        A("10.0.0.255"),
        Reason.NOT_ASSIGNABLE,
        "network default/blue: 10.0.0.255 is the subnet's broadcast address",
        id="fixed-broadcast",
    ),
    pytest.param(
        "held",
        A("10.0.0.13"),
        Reason.ADDRESS_HELD,
        "network default/blue: default/new eth0 holds 10.0.0.10, not 10.0.0.13",
        id="another-fixed-address-while-holding-one",
    ),
]


@pytest.mark.parametrize(("setup", "fixed", "reason", "message"), REFUSALS)
def test_refusals_say_why_with_the_numbers(
    setup: str, fixed: IPv4Address | None, reason: Reason, message: str
) -> None:
    pool = blue()
    if setup == "exhausted":
        for i in range(10):
            pool.allocate(vm(f"v{i}"))
    elif setup == "taken":
        pool.allocate(vm("web"), A("10.0.0.12"))
    elif setup == "held":
        pool.allocate(vm("new"))
    before = dict(pool.assignments())
    refused = pool.allocate(vm("new"), fixed)
    assert refused == Refusal(reason, refused.message) if isinstance(refused, Refusal) else False
    assert isinstance(refused, Refusal) and message in refused.message
    assert dict(pool.assignments()) == before, "a refusal changes nothing"


def test_a_released_address_is_the_next_one_handed_out() -> None:
    pool = blue()
    for i in range(10):
        pool.allocate(vm(f"v{i}"))
    assert pool.release(vm("v3")) == A("10.0.0.13")
    assert pool.release(vm("v3")) is None
    assert pool.allocate(Owner.dhcp("host-a")) == A("10.0.0.13")
    assert pool.holder(A("10.0.0.13")) == Owner.dhcp("host-a")
    assert str(Owner.dhcp("host-a")) == "dhcp:host-a"


def test_rebuild_holds_records_in_order_and_reports_the_later_of_two_as_a_conflict() -> None:
    pool = blue()
    conflicts = ipam.rebuild(
        pool,
        [
            (vm("a"), A("10.0.0.12")),
            (vm("b"), A("10.0.0.12")),  # a hand edit copied a's address
            (vm("c"), A("10.0.1.5")),
            (vm("d"), A("10.0.0.200")),  # outside today's pools: kept, not counted
            (Owner.dhcp("h1"), A("10.0.0.10")),
        ],
    )
    assert [(c.owner, c.refusal.reason) for c in conflicts] == [
        (vm("b"), Reason.ADDRESS_TAKEN),
        (vm("c"), Reason.OUTSIDE_SUBNET),
    ]
    assert "10.0.0.12 is taken by default/a eth0" in conflicts[0].refusal.message
    assert dict(pool.assignments()) == {
        vm("a"): A("10.0.0.12"),
        vm("d"): A("10.0.0.200"),
        Owner.dhcp("h1"): A("10.0.0.10"),
    }
    assert pool.used == 2
    assert pool.allocate(vm("e")) == A("10.0.0.11")
    assert pool.release(vm("d")) == A("10.0.0.200") and pool.used == 3


def test_records_come_from_vm_and_network_statuses() -> None:
    raw_vm = {
        "metadata": {"name": "web", "namespace": "team"},
        "spec": {"memory": {"size": "64Mi"}, "networks": [{"name": "eth0", "network": "blue"}]},
        "status": {
            "interfaces": [
                {
                    "name": "eth0",
                    "network": "blue",
                    "macAddress": "02:00:00:00:00:01",
                    "ipAddresses": ["10.0.0.12"],
                },
                {"name": "eth1", "network": "red", "macAddress": "02:00:00:00:00:02"},
            ]
        },
    }
    records = list(ipam.vm_records(VirtualMachine.model_validate(raw_vm)))
    assert records == [("team/blue", Owner("team/web", "eth0"), A("10.0.0.12"))]
    raw_net = {
        "metadata": {"name": "blue", "namespace": "team"},
        "spec": {"type": "overlay", "subnet": {"cidr": "10.0.0.0/24"}},
        "status": {"dhcpPorts": [{"host": "h1", "ipAddress": "10.0.0.2"}]},
    }
    ports = list(ipam.port_records(Network.model_validate(raw_net)))
    assert ports == [(Owner.dhcp("h1"), A("10.0.0.2"))]


# -- properties -----------------------------------------------------------------------


@st.composite
def settings_of_pools(draw: st.DrawFn) -> dict[str, Any]:
    """A small subnet (so pools fill up) with random pools, gateway and reserved addresses:
    AddressPool's arguments."""
    prefix = draw(st.integers(26, 29))
    subnet = IPv4Network(f"10.1.0.0/{prefix}")
    first, last = int(subnet.network_address), int(subnet.broadcast_address)
    numbers = st.integers(first, last)
    ranges = draw(st.lists(st.tuples(numbers, numbers), max_size=3))
    gateway = draw(st.none() | st.integers(first + 1, last - 1))
    reserved = draw(st.lists(st.integers(first + 1, last - 1), max_size=4))
    return {
        "name": "p/x",
        "subnet": subnet,
        "pools": [(A(min(a, b)), A(max(a, b))) for a, b in ranges],
        "gateway": None if gateway is None else A(gateway),
        "reserved": [A(n) for n in reserved],
    }


OWNERS = [Owner(f"ns/vm{i}", "eth0") for i in range(12)] + [Owner.dhcp(f"h{i}") for i in range(4)]

operations = st.lists(
    st.tuples(
        st.sampled_from(["allocate", "fixed", "release"]),
        st.sampled_from(OWNERS),
        st.integers(0, 2**32 - 1),
    ),
    max_size=60,
)


def offered(kwargs: dict[str, Any]) -> set[IPv4Address]:
    """Brute force: every address a pool built from `kwargs` may hand out."""
    subnet: IPv4Network = kwargs["subnet"]
    pools = kwargs["pools"] or [(subnet.network_address, subnet.broadcast_address)]
    unassignable = {subnet.network_address, subnet.broadcast_address, kwargs["gateway"]}
    return {
        a
        for a in subnet
        if a not in unassignable
        and a not in kwargs["reserved"]
        and any(start <= a <= end for start, end in pools)
    }


def run(pool: AddressPool, ops: list[tuple[str, Owner, int]], offers: set[IPv4Address]) -> None:
    """Apply `ops`, checking each answer against a brute-force model of the pool."""
    assert {a for a in pool.subnet if pool.offers(a)} == offers
    choices = sorted(offers) or [pool.subnet.network_address]
    for op, owner, n in ops:
        held = dict(pool.assignments())
        free = offers - set(held.values())
        if op == "release":
            assert pool.release(owner) == held.get(owner)
            continue
        fixed = choices[n % len(choices)] if op == "fixed" else None
        got = pool.allocate(owner, fixed)
        if owner in held:
            expected = held[owner] if fixed in (None, held[owner]) else Reason.ADDRESS_HELD
        elif fixed is not None:
            expected = fixed if fixed in free else Reason.ADDRESS_TAKEN
            if pool.assignable(fixed) is not None:
                expected = pool.assignable(fixed).reason  # type: ignore[union-attr]
        else:
            expected = min(free) if free else Reason.POOL_EXHAUSTED
        assert (got.reason if isinstance(got, Refusal) else got) == expected
        check(pool, offers)


def check(pool: AddressPool, offers: set[IPv4Address]) -> None:
    """Never two owners with one address; the counts agree with the assignments."""
    assignments = dict(pool.assignments())
    assert len(set(assignments.values())) == len(assignments)
    for owner, address in assignments.items():
        assert pool.holder(address) == owner
        assert pool.assignable(address) is None
    in_pools = [a for a in assignments.values() if a in offers]
    assert pool.used == len(in_pools)
    assert pool.free == pool.capacity - pool.used == len(offers) - len(in_pools)


@settings(max_examples=100, deadline=None)
@given(settings_of_pools(), operations)
def test_every_answer_is_the_brute_force_answer(kwargs: dict[str, Any], ops: list) -> None:  # type: ignore[type-arg]
    run(AddressPool(**kwargs), ops, offered(kwargs))


@settings(max_examples=100, deadline=None)
@given(settings_of_pools(), operations, st.randoms(use_true_random=False))
def test_a_pool_rebuilt_from_its_records_is_the_same_pool(
    kwargs: dict[str, Any],
    ops: list,  # type: ignore[type-arg]
    random: Random,
) -> None:
    pool = AddressPool(**kwargs)
    run(pool, ops, offered(kwargs))
    records = list(pool.assignments().items())
    random.shuffle(records)
    copy = AddressPool(**kwargs)
    assert ipam.rebuild(copy, records) == ()
    assert dict(copy.assignments()) == dict(pool.assignments())
    assert (copy.used, copy.free) == (pool.used, pool.free)
    # ... and it goes on exactly as the original would.
    newcomer = Owner("ns/new", "eth0")
    assert copy.allocate(newcomer) == pool.allocate(newcomer)


@settings(max_examples=100, deadline=None)
@given(settings_of_pools(), st.data())
def test_a_full_pool_hands_a_released_address_out_again(
    kwargs: dict[str, Any], data: st.DataObject
) -> None:
    pool = AddressPool(**kwargs)
    owners = [Owner(f"ns/vm{i}", "eth0") for i in range(pool.capacity)]
    for owner in owners:
        assert isinstance(pool.allocate(owner), IPv4Address)
    assert pool.free == 0
    assert isinstance(pool.allocate(Owner("ns/late", "eth0")), Refusal)
    if not owners:
        return
    leaving = data.draw(st.sampled_from(owners))
    address = pool.release(leaving)
    assert pool.allocate(Owner("ns/late", "eth0")) == address
