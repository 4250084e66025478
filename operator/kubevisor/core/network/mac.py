"""MAC addresses of VM interfaces on Networks: chosen once, recorded, unique in the cluster.

An interface's MAC is the one its VM's status.interfaces records, once there is one; before
that the spec's `macAddress`, or one derived from the VM's uid and the interface name
(`derived`: locally administered unicast, `02:` and five bytes of a SHA-256). The status is
the memory: a recorded MAC is never computed again, so a VM keeps its MAC through restart,
live migration and a re-creation on another host after a failover, whatever changes in
how MACs are derived.

`MacRegistry` holds who has which MAC in the cluster (one writer: the controller) and
refuses a second owner of one MAC with the first one's name, as `ipam` refuses a taken
address. Pure; no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from kubevisor.core.network import holdings
from kubevisor.core.network.holdings import Held, Holdings
from kubevisor.core.network.ipam import Owner, Reason, Refusal

LOCAL_UNICAST = 0x02
"""First octet of derived MACs: the locally administered bit set, the multicast bit clear."""


def derived(uid: str, interface: str) -> str:
    """The MAC of interface `interface` of the VM with uid `uid`, when the spec names none."""
    digest = hashlib.sha256(f"{uid}/{interface}".encode()).digest()[:5]
    return ":".join(f"{octet:02x}" for octet in (LOCAL_UNICAST, *digest))


def chosen(*, recorded: str | None, requested: str | None, uid: str, interface: str) -> str:
    """The MAC an interface has: recorded (status), else requested (spec), else derived."""
    return recorded or requested or derived(uid, interface)


@dataclass(frozen=True, slots=True)
class MacConflict:
    """A recorded MAC a rebuild could not hold: another owner recorded it first."""

    owner: Owner
    mac: str
    refusal: Refusal


class MacRegistry(Held[Owner, str]):
    """Which owner has which MAC, cluster-wide."""

    def __init__(self) -> None:
        self._held: Holdings[Owner, str] = Holdings()

    def __len__(self) -> int:
        return len(self._held)

    def claim(self, owner: Owner, mac: str) -> Refusal | None:
        """Record `mac` as `owner`'s (again: a no-op); refused when another owner has it.
        An owner that had another MAC gives it up."""
        holder = self._held.holder(mac)
        if holder is not None and holder != owner:
            return Refusal(
                Reason.DUPLICATE_MAC, f"MAC address {mac} is already {holder}'s in the cluster"
            )
        self.release(owner)
        self._held.hold(owner, mac)
        return None

    def release(self, owner: Owner) -> str | None:
        return self._held.release(owner)


def rebuild(registry: MacRegistry, records: Iterable[tuple[Owner, str]]) -> tuple[MacConflict, ...]:
    """Claim every recorded MAC in listing order; a MAC recorded twice is the later
    owner's conflict."""
    return tuple(MacConflict(*refused) for refused in holdings.replay(records, registry.claim))
