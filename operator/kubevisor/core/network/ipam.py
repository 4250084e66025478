"""Address management of one Network, decided purely (Neutron's IPAM for one subnet).

An `AddressPool` hands out the IPv4 addresses of a Network's allocation pools (the whole
subnet when it names none) less the network and broadcast addresses, the gateway and the
reserved addresses. Owners are interfaces of VMs (`Owner.interface`) and each host's DHCP
server (`Owner.dhcp`, Neutron's DHCP port). `allocate` gives an owner the lowest free
address or the fixed one it asks for, `release` frees it, and what cannot be done is a
`Refusal` with a reason and the numbers ("network blue: no free address (254 of 254 in
use)"), never an exception.

The statuses are the memory: the controller records each allocation in the VM's
status.interfaces (and a DHCP port's in the Network's status.dhcpPorts) and, after a
restart, `rebuild`s the pool from them in listing order. A record that cannot be held
(the same address recorded for two owners after a hand edit, an address outside the
subnet) is a `Conflict` naming the later owner and why, as placement's claims are.
Because allocation always takes the lowest free address, a rebuilt pool hands out
exactly what the original would have.

The controller owns one pool per Network; this module does no I/O.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from kubevisor.api import addresses, objects
from kubevisor.api.network import Network, Subnet
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.network import holdings
from kubevisor.core.network.holdings import Held, Holdings
from kubevisor.core.network.ranges import LowestFree

DHCP_PREFIX = "dhcp:"


@dataclass(frozen=True, slots=True, order=True)
class Owner:
    """Who holds an address: interface `interface` of VM `vm` ("namespace/name"), or the
    DHCP server of host `host` (`vm` empty)."""

    vm: str
    interface: str

    @classmethod
    def dhcp(cls, host: str) -> Owner:
        return cls("", host)

    @property
    def is_dhcp(self) -> bool:
        return not self.vm

    @property
    def host(self) -> str:
        """The host of a DHCP port."""
        return self.interface

    def __str__(self) -> str:
        if self.is_dhcp:
            return f"{DHCP_PREFIX}{self.interface}"
        return f"{self.vm} {self.interface}"


class Reason(enum.StrEnum):
    """Why an address (or MAC, or VNI) cannot be had: the reason of a VM's condition."""

    POOL_EXHAUSTED = "AddressPoolExhausted"
    ADDRESS_TAKEN = "AddressTaken"
    OUTSIDE_SUBNET = "AddressOutsideSubnet"
    OUTSIDE_POOLS = "AddressOutsidePools"
    NOT_ASSIGNABLE = "AddressNotAssignable"
    ADDRESS_HELD = "AddressAlreadyHeld"
    NETWORK_NOT_FOUND = "NetworkNotFound"
    DUPLICATE_MAC = "DuplicateMacAddress"
    VNI_TAKEN = "VniTaken"
    VNIS_EXHAUSTED = "VnisExhausted"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an allocation was not made, for the VM's condition (reason) and message."""

    reason: Reason
    message: str


@dataclass(frozen=True, slots=True)
class Conflict:
    """A record from a status that a rebuild could not hold: `owner` keeps no address."""

    owner: Owner
    address: IPv4Address
    refusal: Refusal


def _number(address: IPv4Address) -> int:
    return int(address)


def _range_text(start: int, end: int) -> str:
    return f"{IPv4Address(start)}-{IPv4Address(end)}"


class AddressPool(Held[Owner, IPv4Address]):
    """The addresses of one Network and who holds which."""

    def __init__(
        self,
        *,
        name: str,
        subnet: IPv4Network,
        pools: Iterable[tuple[IPv4Address, IPv4Address]] = (),
        gateway: IPv4Address | None = None,
        reserved: Iterable[IPv4Address] = (),
    ) -> None:
        self.name = name
        self.subnet = subnet
        self.gateway = gateway
        self.reserved = frozenset(reserved)
        first = _number(subnet.network_address) + 1
        last = _number(subnet.broadcast_address) - 1
        ranges = [(_number(s), _number(e)) for s, e in pools] or [(first, last)]
        # Never the network or broadcast address, whatever the pools say.
        clipped = [(max(s, first), min(e, last)) for s, e in ranges]
        excluded = {_number(a) for a in self.reserved}
        if gateway is not None:
            excluded.add(_number(gateway))
        self._free = LowestFree(clipped, excluded)
        self._special = {
            subnet.network_address: "the subnet's network address",
            subnet.broadcast_address: "the subnet's broadcast address",
        }
        if gateway is not None:
            self._special[gateway] = "its gateway"
        self._held: Holdings[Owner, IPv4Address] = Holdings()

    @classmethod
    def of(cls, name: str, subnet: Subnet) -> AddressPool:
        """The pool of a Network's spec.subnet; `name` ("namespace/name") is for messages."""
        return cls(
            name=name,
            subnet=subnet.network,
            pools=[
                (addresses.ipv4(pool.start), addresses.ipv4(pool.end))
                for pool in subnet.allocation_pools
            ],
            gateway=addresses.ipv4(subnet.gateway) if subnet.gateway else None,
            reserved=[addresses.ipv4(text) for text in subnet.reserved],
        )

    # -- reading -------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Addresses the pools offer (gateway and reserved ones left out)."""
        return self._free.capacity

    @property
    def used(self) -> int:
        """Addresses of the pools held (an owner may hold one outside them: see rebuild)."""
        return self._free.used

    @property
    def free(self) -> int:
        return self._free.free

    def owners(self) -> Iterator[Owner]:
        return iter(self._held.assignments())

    def offers(self, address: IPv4Address) -> bool:
        """Is `address` one the pools hand out (in a pool; not the gateway, reserved, the
        network or broadcast address)?"""
        return self._free.offered(_number(address))

    def pools_text(self) -> str:
        return ", ".join(_range_text(s, e) for s, e in self._free.ranges)

    # -- deciding ------------------------------------------------------------------------

    def _refuse(self, reason: Reason, text: str) -> Refusal:
        return Refusal(reason, f"network {self.name}: {text}")

    def assignable(self, address: IPv4Address) -> Refusal | None:
        """Why `address` can never be anyone's here (None: it can): outside the subnet,
        its network or broadcast address, the gateway, reserved."""
        if address not in self.subnet:
            return self._refuse(
                Reason.OUTSIDE_SUBNET, f"{address} is outside its subnet {self.subnet}"
            )
        special = self._special.get(address)
        if special is not None:
            return self._refuse(Reason.NOT_ASSIGNABLE, f"{address} is {special}")
        if address in self.reserved:
            return self._refuse(Reason.NOT_ASSIGNABLE, f"{address} is reserved")
        return None

    def _check_fixed(self, owner: Owner, address: IPv4Address) -> Refusal | None:
        refused = self.assignable(address)
        if refused is not None:
            return refused
        if not self.offers(address):
            return self._refuse(
                Reason.OUTSIDE_POOLS,
                f"{address} is outside its allocation pools ({self.pools_text()})",
            )
        holder = self._held.holder(address)
        if holder is not None and holder != owner:
            return self._refuse(Reason.ADDRESS_TAKEN, f"{address} is taken by {holder}")
        return None

    # -- changing ------------------------------------------------------------------------

    def allocate(self, owner: Owner, fixed: IPv4Address | None = None) -> IPv4Address | Refusal:
        """Give `owner` an address: `fixed` when it asks for one (it must be in a pool, not
        the gateway or reserved, and free), else the lowest free one. An owner that holds
        one already keeps it: asking again returns it, asking for another is refused (an
        address stays with its VM until the VM is deleted)."""
        held = self._held.value_of(owner)
        if held is not None:
            if fixed is None or fixed == held:
                return held
            return self._refuse(
                Reason.ADDRESS_HELD,
                f"{owner} holds {held}, not {fixed}: an address stays with its VM until "
                "the VM is deleted",
            )
        if fixed is not None:
            refused = self._check_fixed(owner, fixed)
            if refused is not None:
                return refused
            self._free.take(_number(fixed))
            return self._held.hold(owner, fixed)
        number = self._free.take_lowest()
        if number is None:
            return self._refuse(
                Reason.POOL_EXHAUSTED,
                f"no free address ({self.used} of {self.capacity} in use)",
            )
        return self._held.hold(owner, IPv4Address(number))

    def release(self, owner: Owner) -> IPv4Address | None:
        """Free the address `owner` holds (None: it holds none)."""
        address = self._held.release(owner)
        if address is None:
            return None
        if self._free.is_taken(_number(address)):
            self._free.give_back(_number(address))
        return address

    def hold(self, owner: Owner, address: IPv4Address) -> Refusal | None:
        """Hold an address a status records (the rebuild's step): anywhere in the subnet
        but the unassignable addresses, and not held by another owner. An address outside
        the pools is kept (the pools may have shrunk since) but not counted in them."""
        refused = self.assignable(address)
        if refused is not None:
            return refused
        holder = self._held.holder(address)
        if holder is not None and holder != owner:
            return self._refuse(Reason.ADDRESS_TAKEN, f"{address} is taken by {holder}")
        held = self._held.value_of(owner)
        if held is not None and held != address:
            return self._refuse(Reason.ADDRESS_HELD, f"{owner} holds {held} already")
        if held is None:
            if self.offers(address):
                self._free.take(_number(address))
            self._held.hold(owner, address)
        return None


def rebuild(
    pool: AddressPool, records: Iterable[tuple[Owner, IPv4Address]]
) -> tuple[Conflict, ...]:
    """Hold every recorded address in `pool`, in listing order: a record that cannot be
    held (taken by an earlier one, outside the subnet, the gateway, reserved) is a
    conflict and its owner holds nothing."""
    return tuple(Conflict(*refused) for refused in holdings.replay(records, pool.hold))


def parse(text: str) -> IPv4Address | None:
    """An address from a status (None when it is not one: a hand edit)."""
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def vm_records(vm: VirtualMachine) -> Iterator[tuple[str, Owner, IPv4Address]]:
    """(Network key, owner, address) of every address a VM's status.interfaces records;
    the Network is in the VM's namespace."""
    if vm.status is None:
        return
    key = objects.key(vm.metadata)
    namespace = key.split("/", 1)[0]
    for interface in vm.status.interfaces:
        for text in interface.ip_addresses[:1]:
            address = parse(text)
            if address is not None:
                yield f"{namespace}/{interface.network}", Owner(key, interface.name), address


def port_records(network: Network) -> Iterator[tuple[Owner, IPv4Address]]:
    """(owner, address) of every DHCP port a Network's status records."""
    if network.status is None:
        return
    for port in network.status.dhcp_ports:
        address = parse(port.ip_address)
        if address is not None:
            yield Owner.dhcp(port.host), address
