"""Who holds what, looked up both ways: the record address, MAC and VNI allocation share.

`Holdings` maps each owner to the one value it holds and each value back to its owner.
`ipam.AddressPool` (owner -> IPv4 address), `mac.MacRegistry` (owner -> MAC) and
`vni.VniPool` (Network uid -> VNI) each own one and keep their own rules on top: which
values may be held and why a claim is refused. This object is mutable; pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from types import MappingProxyType
from typing import Generic, TypeVar

OwnerT = TypeVar("OwnerT", bound=Hashable)
ValueT = TypeVar("ValueT", bound=Hashable)
WhyT = TypeVar("WhyT")


class Holdings(Generic[OwnerT, ValueT]):
    """One value per owner and one owner per value."""

    def __init__(self) -> None:
        self._by_owner: dict[OwnerT, ValueT] = {}
        self._by_value: dict[ValueT, OwnerT] = {}

    def __len__(self) -> int:
        return len(self._by_owner)

    def value_of(self, owner: OwnerT) -> ValueT | None:
        return self._by_owner.get(owner)

    def holder(self, value: ValueT) -> OwnerT | None:
        return self._by_value.get(value)

    def assignments(self) -> Mapping[OwnerT, ValueT]:
        """Every owner and its value (a read-only view)."""
        return MappingProxyType(self._by_owner)

    def hold(self, owner: OwnerT, value: ValueT) -> ValueT:
        """Record `value` as `owner`'s. The caller has checked that no other owner holds
        `value` and that `owner` holds nothing else (or released it)."""
        self._by_owner[owner] = value
        self._by_value[value] = owner
        return value

    def release(self, owner: OwnerT) -> ValueT | None:
        """Forget what `owner` holds; returns it (None: it held nothing)."""
        value = self._by_owner.pop(owner, None)
        if value is not None:
            del self._by_value[value]
        return value


class Held(Generic[OwnerT, ValueT]):
    """The reading side of an allocator that keeps its record in a `Holdings` (`_held`):
    `ipam.AddressPool`, `mac.MacRegistry` and `vni.VniPool` extend it with their rules for
    claiming."""

    _held: Holdings[OwnerT, ValueT]

    def held_by(self, owner: OwnerT) -> ValueT | None:
        """What `owner` holds (None: nothing)."""
        return self._held.value_of(owner)

    def holder(self, value: ValueT) -> OwnerT | None:
        return self._held.holder(value)

    def assignments(self) -> Mapping[OwnerT, ValueT]:
        """Every owner and its value (a read-only view)."""
        return self._held.assignments()


def replay(
    records: Iterable[tuple[OwnerT, ValueT]], hold: Callable[[OwnerT, ValueT], WhyT | None]
) -> list[tuple[OwnerT, ValueT, WhyT]]:
    """Hold every recorded (owner, value) in listing order, as a rebuild from statuses
    does; returns the records `hold` refused, each with its refusal."""
    refused = []
    for owner, value in records:
        why = hold(owner, value)
        if why is not None:
            refused.append((owner, value, why))
    return refused
