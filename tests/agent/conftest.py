"""A fake clock for the agent's work queue (its `call_later`), advanced by the tests."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

import pytest


class FakeClock:
    """A `call_later` whose time moves only when a test calls `advance`."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (self.now + delay, next(self._order), callback))

    def advance(self, seconds: float) -> None:
        """Move time on, running the callbacks that fall due, in order."""
        self.now += seconds
        while self._timers and self._timers[0][0] <= self.now:
            heapq.heappop(self._timers)[2]()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
