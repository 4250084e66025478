"""VXLAN network identifiers of overlay Networks: unique in the cluster.

A Network names its VNI (`spec.overlay.vni`, any of 1..16777215) or the controller
allocates the lowest free one from `AUTOMATIC` (4096..16777215) into `status.vni`. VNIs
below 4096 are never allocated automatically: they stay free for admins who name VNIs
themselves (a common convention maps VLAN id N to VNI N), so a named VNI there never
meets an allocated one. A VNI another Network holds is refused with that Network's name;
after a restart the pool is rebuilt from the Networks' statuses (spec's VNI, or status.vni)
in listing order, a VNI recorded twice being the later Network's conflict.

The controller owns one `VniPool`; pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from kubevisor.api.network import MAX_VNI, MIN_VNI
from kubevisor.core.network import holdings
from kubevisor.core.network.holdings import Held, Holdings
from kubevisor.core.network.ipam import Reason, Refusal
from kubevisor.core.network.ranges import LowestFree

AUTOMATIC: Final = (4096, MAX_VNI)
"""The VNIs the controller allocates from (inclusive)."""


@dataclass(frozen=True, slots=True)
class VniConflict:
    network: str
    vni: int
    refusal: Refusal


class VniPool(Held[str, int]):
    """Which Network ("namespace/name") holds which VNI."""

    def __init__(self, automatic: tuple[int, int] = AUTOMATIC) -> None:
        self._range = automatic
        self._automatic = LowestFree([automatic])
        self._held: Holdings[str, int] = Holdings()

    def allocate(self, network: str, requested: int | None = None) -> int | Refusal:
        """The VNI of `network`: the one it holds, else `requested` if free, else the
        lowest free automatic one. A Network holding one keeps it (VNIs are immutable)."""
        held = self._held.value_of(network)
        if held is not None and (requested is None or requested == held):
            return held
        if held is not None:
            return Refusal(Reason.VNI_TAKEN, f"network {network} holds VNI {held}, not {requested}")
        if requested is not None:
            if not MIN_VNI <= requested <= MAX_VNI:
                return Refusal(Reason.VNI_TAKEN, f"VNI {requested} is outside {MIN_VNI}..{MAX_VNI}")
            holder = self._held.holder(requested)
            if holder is not None:
                return Refusal(Reason.VNI_TAKEN, f"VNI {requested} is network {holder}'s")
            if self._automatic.offered(requested):
                self._automatic.take(requested)
            return self._held.hold(network, requested)
        number = self._automatic.take_lowest()
        if number is None:
            low, high = self._range
            return Refusal(
                Reason.VNIS_EXHAUSTED,
                f"no free VNI ({self._automatic.used} of {self._automatic.capacity} of "
                f"{low}..{high} in use)",
            )
        return self._held.hold(network, number)

    def hold(self, network: str, vni: int) -> Refusal | None:
        """Hold the VNI recorded for `network` (`allocate` with it named); why not."""
        held = self.allocate(network, vni)
        return held if isinstance(held, Refusal) else None

    def release(self, network: str) -> int | None:
        vni = self._held.release(network)
        if vni is None:
            return None
        if self._automatic.is_taken(vni):
            self._automatic.give_back(vni)
        return vni


def rebuild(pool: VniPool, records: Iterable[tuple[str, int]]) -> tuple[VniConflict, ...]:
    """Hold every recorded VNI in listing order; a VNI recorded twice is a conflict of
    the later Network."""
    return tuple(VniConflict(*refused) for refused in holdings.replay(records, pool.hold))
