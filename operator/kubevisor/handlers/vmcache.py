"""The controller's cache of VirtualMachines, counting them by phase as it changes.

The VMs-by-phase gauge used to be recounted over every cached VM on every VM event: O(N)
per event, quadratic in a burst (`bench/scale.py`: 7 % of the controller's samples at 700
VMs). The cache keeps the counts as objects are stored and removed instead.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

Object = dict[str, Any]


def phase(obj: Object | None) -> str | None:
    """The phase a VM counts under (Pending until it has one); None for no VM."""
    if obj is None:
        return None
    return str((obj.get("status") or {}).get("phase") or "Pending")


class VmCache(dict[str, Object]):
    """A dict of VMs by key whose `phases` count them by phase, kept by `[key] = obj`,
    `del`, `pop` and `clear` (the only ways the controller changes it)."""

    def __init__(self) -> None:
        super().__init__()
        self.phases: Counter[str] = Counter()

    def _count(self, before: Object | None, after: Object | None) -> None:
        if (old := phase(before)) is not None:
            self.phases[old] -= 1
        if (new := phase(after)) is not None:
            self.phases[new] += 1

    def __setitem__(self, key: str, obj: Object) -> None:
        self._count(self.get(key), obj)
        super().__setitem__(key, obj)

    def __delitem__(self, key: str) -> None:
        self._count(self[key], None)
        super().__delitem__(key)

    def pop(self, key: str, default: Any = None) -> Any:
        if key in self:
            self._count(self[key], None)
        return super().pop(key, default)

    def clear(self) -> None:
        self.phases.clear()
        super().clear()
