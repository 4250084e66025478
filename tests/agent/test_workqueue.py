"""The agent's work queue: de-duplication, one worker per key, and per-key backoff.

Time is the `clock` fixture (conftest.py), handed to the queue as its `call_later`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubevisor.agent.workqueue import WorkQueue

KEY = "ns/vm"


async def drain(queue: WorkQueue) -> list[str]:
    """Process every key that is queued now (none may be in process), doing nothing."""
    keys = []
    while len(queue):
        keys.append(await queue.get())
        queue.done(keys[-1])
    return keys


def test_a_key_added_while_processed_is_processed_once_more_afterwards(clock: Any) -> None:
    async def main() -> None:
        queue = WorkQueue(call_later=clock.call_later)
        queue.add(KEY)
        queue.add(KEY)
        assert len(queue) == 1
        key = await queue.get()
        queue.add(KEY)
        queue.add(KEY)
        assert len(queue) == 1, "not handed to a second worker while active"
        queue.done(key)
        assert await queue.get() == KEY
        queue.done(KEY)
        assert len(queue) == 0

    asyncio.run(main())


@pytest.mark.parametrize(
    ("at_least", "delays"),
    [
        pytest.param(0.0, [1, 2, 4, 8, 16, 32, 60, 60], id="doubling-from-1s-to-the-cap"),
        pytest.param(5.0, [5, 5, 5, 8, 16, 32, 60, 60], id="the-errors-delay-is-a-floor"),
    ],
)
def test_consecutive_failures_back_off_exponentially(
    clock: Any, at_least: float, delays: list[int]
) -> None:
    async def main() -> list[float]:
        queue = WorkQueue(call_later=clock.call_later)
        got = []
        for _ in delays:
            queue.add(KEY)
            await queue.get()
            got.append(queue.retry(KEY, at_least=at_least))
            queue.done(KEY)
            clock.advance(got[-1])
            assert await drain(queue) == [KEY]
        return got

    assert asyncio.run(main()) == delays


def test_the_key_comes_back_exactly_when_its_hold_ends(clock: Any) -> None:
    async def main() -> None:
        queue = WorkQueue(call_later=clock.call_later)
        queue.add(KEY)
        await queue.get()
        assert queue.retry(KEY, request="gen-1") == 1.0
        queue.done(KEY)
        clock.advance(0.999)
        assert len(queue) == 0
        clock.advance(0.001)
        assert await queue.get() == KEY
        assert queue.due(KEY, "gen-1")

    asyncio.run(main())


def test_triggers_of_the_failed_request_are_skipped_until_the_hold_ends(clock: Any) -> None:
    """The echo of the agent's own status write and libvirt's events of the failed start."""

    async def main() -> None:
        queue = WorkQueue(call_later=clock.call_later)
        queue.add(KEY)
        await queue.get()
        queue.add(KEY)  # an event the attempt caused, while it ran
        queue.retry(KEY, request="gen-1", at_least=5.0)
        queue.done(KEY)
        for _ in range(3):  # more of them after it
            assert await queue.get() == KEY
            assert not queue.due(KEY, "gen-1")
            queue.done(KEY)
            queue.add(KEY)
        await queue.get()
        queue.done(KEY)
        clock.advance(5.0)
        assert await queue.get() == KEY
        assert queue.due(KEY, "gen-1")

    asyncio.run(main())


def test_a_new_request_is_due_at_once_and_starts_the_backoff_afresh(clock: Any) -> None:
    async def main() -> None:
        queue = WorkQueue(call_later=clock.call_later)
        for _ in range(4):
            queue.add(KEY)
            await queue.get()
            queue.retry(KEY, request="gen-1")
            queue.done(KEY)
            clock.advance(60.0)
        assert queue.failures(KEY) == 4
        queue.add(KEY)
        await queue.get()
        queue.retry(KEY, request="gen-1")  # held for 16 s
        queue.done(KEY)
        queue.add(KEY)  # the user changed the spec
        await queue.get()
        assert queue.due(KEY, "gen-2")
        assert queue.failures(KEY) == 0
        assert queue.retry(KEY, request="gen-2") == 1.0
        queue.done(KEY)
        clock.advance(1.0)
        assert await drain(queue) == [KEY]
        clock.advance(15.0)  # the old hold's timer finds a newer hold gone: nothing
        assert await drain(queue) == []

    asyncio.run(main())


def test_success_resets_the_backoff(clock: Any) -> None:
    async def main() -> None:
        queue = WorkQueue(call_later=clock.call_later)
        for expected in (1.0, 2.0, 4.0):
            queue.add(KEY)
            await queue.get()
            assert queue.retry(KEY) == expected
            queue.done(KEY)
            clock.advance(expected)
        await queue.get()
        queue.forget(KEY)
        queue.done(KEY)
        queue.add(KEY)
        await queue.get()
        assert queue.retry(KEY) == 1.0

    asyncio.run(main())


def test_the_default_clock_is_the_event_loop() -> None:
    async def main() -> None:
        queue = WorkQueue(base_delay=0.001)
        queue.add(KEY)
        await queue.get()
        queue.retry(KEY)
        queue.done(KEY)
        assert await asyncio.wait_for(queue.get(), timeout=5.0) == KEY

    asyncio.run(main())


def test_add_after_brings_a_polled_key_back_once_per_delay(clock: Any) -> None:
    async def main() -> None:
        queue = WorkQueue(call_later=clock.call_later)
        for _ in range(5):  # reconciled five times within the second: still one timer
            queue.add_after(KEY, 1.0)
        clock.advance(0.999)
        assert len(queue) == 0
        clock.advance(0.001)
        assert await drain(queue) == [KEY]
        clock.advance(10.0)
        assert len(queue) == 0, "nothing more until someone asks again"
        queue.add_after(KEY, 1.0)
        clock.advance(1.0)
        assert await drain(queue) == [KEY]
        assert queue.failures(KEY) == 0

    asyncio.run(main())


def test_next_delay_is_the_hold_retry_gives(clock: Any) -> None:
    async def main() -> None:
        queue = WorkQueue(call_later=clock.call_later)
        for _ in range(4):
            announced = queue.next_delay(KEY, at_least=1.5)
            assert queue.retry(KEY, at_least=1.5) == announced
        assert queue.next_delay(KEY) == 16.0

    asyncio.run(main())
