"""The lowest free number in a set of ranges: what address and VNI allocation share.

`LowestFree` keeps which numbers of some inclusive ranges (less some excluded numbers)
are taken and hands out the lowest free one. It never enumerates the ranges: a cursor
walks them once, and numbers given back below the cursor wait in a heap, so taking and
giving back cost O(log n) amortised however large the ranges are (a /8 subnet holds 16
million addresses). Because the answer is always the lowest free number, it depends only
on which numbers are taken, never on the order things happened: a copy rebuilt from the
taken numbers answers exactly as the original.

This object is mutable; `ipam.AddressPool` and `vni.VniPool` each own one.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable


def merged(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Inclusive ranges sorted, with overlapping and touching ones joined; empty ones
    (start > end) dropped."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[0] <= r[1]):
        if out and start <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return tuple(out)


class LowestFree:
    """Taken and free numbers of `ranges` (inclusive, any order, may overlap), never
    handing out `excluded` ones."""

    def __init__(self, ranges: Iterable[tuple[int, int]], excluded: Iterable[int] = ()) -> None:
        self.ranges = merged(ranges)
        self._starts = [start for start, _ in self.ranges]
        self.excluded = frozenset(n for n in excluded if self.contains(n))
        self.capacity = sum(end - start + 1 for start, end in self.ranges) - len(self.excluded)
        self._taken: set[int] = set()
        self._cursor_range = 0
        self._cursor = self.ranges[0][0] if self.ranges else 0
        self._below: list[int] = []
        """Free numbers below the cursor (and stale entries taken since, skipped lazily)."""

    def contains(self, number: int) -> bool:
        """Is `number` in one of the ranges (excluded or not)?"""
        i = bisect.bisect_right(self._starts, number) - 1
        return i >= 0 and number <= self.ranges[i][1]

    def offered(self, number: int) -> bool:
        """Is `number` one this object may hand out (in a range, not excluded)?"""
        return number not in self.excluded and self.contains(number)

    @property
    def used(self) -> int:
        return len(self._taken)

    @property
    def free(self) -> int:
        return self.capacity - len(self._taken)

    def is_taken(self, number: int) -> bool:
        return number in self._taken

    def _behind_cursor(self, number: int) -> bool:
        if self._cursor_range >= len(self.ranges):
            return True
        return number < self._cursor

    def take_lowest(self) -> int | None:
        """Take the lowest free number; None when every one is taken."""
        if self.free <= 0:
            return None
        while self._below:
            number = heapq.heappop(self._below)
            if number not in self._taken:
                self._taken.add(number)
                return number
        while self._cursor_range < len(self.ranges):
            _, end = self.ranges[self._cursor_range]
            if self._cursor > end:
                self._cursor_range += 1
                if self._cursor_range < len(self.ranges):
                    self._cursor = self.ranges[self._cursor_range][0]
                continue
            number = self._cursor
            self._cursor += 1
            if number in self.excluded or number in self._taken:
                continue
            self._taken.add(number)
            return number
        raise AssertionError("free numbers counted but none found")  # pragma: no cover

    def take(self, number: int) -> bool:
        """Take `number`, one this object offers; False when it is already taken."""
        if not self.offered(number):
            raise ValueError(f"{number} is not offered")
        if number in self._taken:
            return False
        # Below the cursor it stays in the heap: take_lowest skips taken entries.
        self._taken.add(number)
        return True

    def give_back(self, number: int) -> None:
        """Free a taken number again."""
        self._taken.remove(number)
        if self._behind_cursor(number):
            heapq.heappush(self._below, number)
