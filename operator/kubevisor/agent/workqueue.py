"""A de-duplicating, rate-limited work queue of object keys, like client-go's workqueue.

A key is never processed by two workers at once; a key added while it is being processed
is processed once more afterwards, so no change is lost and none is handled twice in
parallel. Used by the agent for VMs (key: namespace/name).

A key whose processing failed backs off exponentially, as client-go's rate-limited queue
does: `retry` holds it for `base_delay` doubling per consecutive failure up to `max_delay`
(or the error's own delay, when that is longer), then adds it again; `forget` (on success)
resets the count. A failing attempt causes triggers of its own (libvirt lifecycle events,
the watch echoing the status it wrote); the hold keeps them from retrying the key at once.
`add` still queues a held key, because only the caller can tell a trigger it caused from a
new request; the worker asks `due` and skips a held key whose request is the
one that failed, and the timer brings it back when the hold ends.

`add_after` brings a key back after a delay without counting a failure: the agent polls a
VM whose image is downloading, so its status shows the progress.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

Scheduler = Callable[[float, Callable[[], None]], Any]
"""Runs a callback after a delay in seconds: the event loop's `call_later`, or a fake clock."""


class WorkQueue:
    def __init__(
        self,
        *,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        call_later: Scheduler | None = None,
    ) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: set[str] = set()
        self._active: set[str] = set()
        self._again: set[str] = set()
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._call_later = call_later
        self._failures: dict[str, int] = {}
        self._held: dict[str, tuple[object, object]] = {}
        """Key -> (this hold's token, the request that failed), until the hold ends."""
        self._later: set[str] = set()
        """Keys `add_after` will add."""

    def add(self, key: str) -> None:
        if key in self._active:
            self._again.add(key)
        elif key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    async def get(self) -> str:
        key = await self._queue.get()
        self._pending.discard(key)
        self._active.add(key)
        return key

    def done(self, key: str) -> None:
        self._active.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)

    def add_after(self, key: str, delay: float) -> None:
        """Add `key` after `delay` seconds, unless an earlier call will already add it: a
        key polled from every reconcile gets one timer, however often it is reconciled."""
        if key in self._later:
            return
        self._later.add(key)

        def later() -> None:
            self._later.discard(key)
            self.add(key)

        self._schedule(delay, later)

    def backoff(self, failures: int) -> float:
        """The hold after `failures` earlier consecutive failures: base doubling to max."""
        # The exponent stops growing long after the cap is reached (2.0**1024 overflows).
        return min(self.base_delay * 2.0 ** min(failures, 62), self.max_delay)

    def next_delay(self, key: str, *, at_least: float = 0.0) -> float:
        """The hold `retry` would give `key` now (a status message can announce it)."""
        return max(at_least, self.backoff(self._failures.get(key, 0)))

    def retry(self, key: str, *, request: object = None, at_least: float = 0.0) -> float:
        """Count a failure of `key` while it asked for `request` (what the caller compares in
        `due`), hold it back, and add it again after the delay returned."""
        delay = self.next_delay(key, at_least=at_least)
        self._failures[key] = self._failures.get(key, 0) + 1
        token = object()
        self._held[key] = (token, request)
        self._schedule(delay, lambda: self._release(key, token))
        return delay

    def due(self, key: str, request: object = None) -> bool:
        """Whether to process `key` now: not while it backs off from a failure of this same
        `request`. A changed request ends the hold and the count, since its predecessor's
        failures say nothing about it."""
        held = self._held.get(key)
        if held is None:
            return True
        if held[1] == request:
            return False
        self.forget(key)
        return True

    def forget(self, key: str) -> None:
        """Reset the key's backoff; the worker calls this when processing succeeded."""
        self._failures.pop(key, None)
        self._held.pop(key, None)  # its timer finds another token, or none, and does nothing

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    def _release(self, key: str, token: object) -> None:
        held = self._held.get(key)
        if held is not None and held[0] is token:
            del self._held[key]
            self.add(key)

    def _schedule(self, delay: float, callback: Callable[[], None]) -> None:
        if self._call_later is not None:
            self._call_later(delay, callback)
        else:
            asyncio.get_running_loop().call_later(delay, callback)

    def __len__(self) -> int:
        return len(self._pending) + len(self._active)
