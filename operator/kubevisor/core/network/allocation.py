"""A VM's interfaces on Networks, allocated all or nothing: what the controller writes into
the VM's status.interfaces before it binds the VM to a host.

`allocate` gives every interface that names a Network its MAC (`mac.chosen`: recorded,
else the spec's, else derived; unique in the cluster) and its address (the recorded one,
else the spec's fixed one, else the lowest free one in the Network's pools). The status is
the memory: an interface that already records a MAC and address on the same Network keeps
them. When one interface cannot be served (its Network does not exist, the pool is
exhausted, its fixed address is taken, its MAC is another VM's) nothing of this call
stays allocated and the `Refusal` says which and why, for the VM's condition. `release`
gives everything back when the VM is deleted.

The controller owns the pools and the MAC registry and calls these under the same lock as
placement's claims; pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from kubevisor.api import objects
from kubevisor.api.virtualmachine import InterfaceStatus, VirtualMachine
from kubevisor.core.network import ipam, mac
from kubevisor.core.network.ipam import AddressPool, Owner, Reason, Refusal
from kubevisor.core.network.mac import MacRegistry


@dataclass
class _Undo:
    """What one `allocate` call took, to give back if a later interface is refused."""

    addresses: list[tuple[AddressPool, Owner]] = field(default_factory=list)
    macs: list[tuple[Owner, str | None]] = field(default_factory=list)
    """Owners whose MAC this call set, with the MAC they had before (None: none)."""

    def run(self, macs: MacRegistry) -> None:
        for pool, owner in reversed(self.addresses):
            pool.release(owner)
        for owner, before in reversed(self.macs):
            macs.release(owner)
            if before is not None:
                macs.claim(owner, before)


def _recorded(vm: VirtualMachine) -> dict[str, InterfaceStatus]:
    return {entry.name: entry for entry in (vm.status.interfaces if vm.status else [])}


def allocate(
    vm: VirtualMachine, *, pools: Mapping[str, AddressPool], macs: MacRegistry
) -> tuple[InterfaceStatus, ...] | Refusal:
    """The status.interfaces of `vm` (one entry per interface on a Network, in spec order),
    allocating what is not recorded yet; or why not, with nothing of this call kept.
    `pools` are the Networks' address pools by "namespace/name"."""
    key = objects.key(vm.metadata)
    namespace = key.split("/", 1)[0]
    uid = str(vm.metadata.get("uid") or key)
    recorded = _recorded(vm)
    undo = _Undo()
    out: list[InterfaceStatus] = []
    for interface in vm.spec.networks:
        if interface.network is None:
            continue
        network = f"{namespace}/{interface.network}"
        pool = pools.get(network)
        if pool is None:
            undo.run(macs)
            return Refusal(
                Reason.NETWORK_NOT_FOUND,
                f"interface {interface.name}: network {network} does not exist",
            )
        owner = Owner(key, interface.name)
        before = recorded.get(interface.name)
        if before is not None and before.network != interface.network:
            before = None  # moved to another Network: a new allocation there
        chosen = mac.chosen(
            recorded=before.mac_address if before else None,
            requested=interface.mac_address,
            uid=uid,
            interface=interface.name,
        )
        had_mac = macs.held_by(owner)
        if had_mac != chosen:
            refused = macs.claim(owner, chosen)
            if refused is not None:
                undo.run(macs)
                return Refusal(refused.reason, f"interface {interface.name}: {refused.message}")
            undo.macs.append((owner, had_mac))
        fixed = _fixed(before, interface.ip_address)
        held = pool.held_by(owner)
        got = pool.allocate(owner, fixed)
        if isinstance(got, Refusal):
            undo.run(macs)
            return Refusal(got.reason, f"interface {interface.name}: {got.message}")
        if held is None:
            undo.addresses.append((pool, owner))
        out.append(
            InterfaceStatus(
                name=interface.name,
                network=interface.network,
                mac_address=chosen,
                ip_addresses=[str(got)],
            )
        )
    return tuple(out)


def _fixed(before: InterfaceStatus | None, requested: str | None) -> IPv4Address | None:
    """The address an interface must get: the one its status records, else the spec's."""
    if before is not None and before.ip_addresses:
        recorded = ipam.parse(before.ip_addresses[0])
        if recorded is not None:
            return recorded
    return ipam.parse(requested) if requested else None


def release(
    vm: VirtualMachine, *, pools: Mapping[str, AddressPool], macs: MacRegistry
) -> tuple[IPv4Address, ...]:
    """Give back every address and MAC the VM's interfaces hold (the VM is deleted); the
    addresses freed, for the log."""
    key = objects.key(vm.metadata)
    namespace = key.split("/", 1)[0]
    held = {(i.name, i.network) for i in vm.spec.networks if i.network} | {
        (i.name, i.network) for i in _recorded(vm).values()
    }
    freed: list[IPv4Address] = []
    for name, network in sorted(held):
        owner = Owner(key, name)
        macs.release(owner)
        pool = pools.get(f"{namespace}/{network}")
        address = pool.release(owner) if pool is not None else None
        if address is not None:
            freed.append(address)
    return tuple(freed)
