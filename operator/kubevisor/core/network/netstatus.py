"""A Network's status as one pure function of explicit inputs: what the controller's
network wiring (handlers/networks.py) applies after every change of the Network's pool,
its DHCP ports, its VNI or the VMs that use it.

Ready says whether VMs can be placed on the Network: False while it is being deleted
(the message lists the VMs that still use it, which the deletion waits for) or while its
VNI cannot be had (another Network holds it). AddressConflict says which addresses or MACs
recorded in statuses could not be held when the allocator was rebuilt (a hand edit gave
one address to two VMs): the later owner holds nothing until someone fixes its status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address

from kubevisor.api import conditions as cond
from kubevisor.core.conditions import Row, previous, wire
from kubevisor.core.network.ipam import Refusal

ADDRESS_CONFLICT = "AddressConflict"
MAX_NAMED = 10
"""VMs named in a message at most; the rest are counted."""


def listed(names: Sequence[str]) -> str:
    """`names` for a message: the first MAX_NAMED, then how many more."""
    shown = ", ".join(names[:MAX_NAMED])
    rest = len(names) - MAX_NAMED
    return f"{shown} and {rest} more" if rest > 0 else shown


@dataclass(frozen=True, slots=True, kw_only=True)
class Inputs:
    """Everything a Network's status depends on."""

    generation: int
    overlay: bool
    used: int
    free: int
    vni: int | Refusal | None
    """The VNI held (overlay), why none could be had, or None (provider)."""
    ports: Mapping[str, IPv4Address]
    """Host -> address of its DHCP server on the Network."""
    users: Sequence[str]
    """The VMs ("namespace/name") holding an address on the Network, sorted."""
    deleting: bool
    conflicts: Sequence[str] = ()
    """Messages of the records the rebuild could not hold."""


def _ready(i: Inputs) -> Row:
    if i.deleting and i.users:
        return Row(
            cond.READY,
            "False",
            "InUse",
            f"deletion waits for the {len(i.users)} VMs that use it: {listed(i.users)}",
        )
    if i.deleting:
        return Row(cond.READY, "False", "Deleting", "no VM uses it; deleting")
    if isinstance(i.vni, Refusal):
        return Row(cond.READY, "False", i.vni.reason, i.vni.message)
    total = i.used + i.free
    return Row(cond.READY, "True", "Ready", f"{i.used} of {total} addresses in use")


def _conflicts(i: Inputs) -> Row:
    if i.conflicts:
        return Row(ADDRESS_CONFLICT, "True", ADDRESS_CONFLICT, "; ".join(i.conflicts))
    return Row(ADDRESS_CONFLICT, "False", "NoConflict", "every recorded address is held")


def network_status(
    inputs: Inputs, *, current: Mapping[str, object] | None, now: datetime
) -> dict[str, object]:
    """The Network's status as the wire dict the controller applies (camelCase keys);
    `current` is the status the API server holds, for the conditions' transition times."""
    status: dict[str, object] = {
        "used": inputs.used,
        "free": inputs.free,
        "dhcpPorts": [
            {"host": host, "ipAddress": str(address)}
            for host, address in sorted(inputs.ports.items())
        ],
        "observedGeneration": inputs.generation,
        "conditions": wire(
            previous(current),
            (_ready(inputs), _conflicts(inputs)),
            generation=inputs.generation,
            now=now,
        ),
    }
    if inputs.overlay and isinstance(inputs.vni, int):
        status["vni"] = inputs.vni
    return status
