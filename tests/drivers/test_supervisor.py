"""The connection supervisor both real drivers use: back-off, events, reconnection, close."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from kubevisor.drivers import base, events, supervisor


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = list(itertools.islice(supervisor.backoff_delays(0.5, 3.0), 6))
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


class Transient(Exception):
    """What the fake endpoint raises while it is down."""


class Endpoint:
    """A hypervisor that refuses `failures` connections, then accepts; `drop` loses the
    current connection with a reason."""

    def __init__(self, *, failures: int = 0, fatal: Exception | None = None) -> None:
        self.failures = failures
        self.fatal = fatal
        self.opened = 0
        self.closed: list[int] = []
        self._lost: asyncio.Queue[str] = asyncio.Queue()

    async def open(self) -> int:
        if self.fatal is not None:
            raise self.fatal
        if self.failures:
            self.failures -= 1
            raise Transient("connection refused")
        self.opened += 1
        return self.opened

    async def watch(self, _connection: int) -> str:
        return await self._lost.get()

    async def close(self, connection: int) -> None:
        self.closed.append(connection)

    def drop(self, reason: str) -> None:
        self._lost.put_nowait(reason)


def supervised(endpoint: Endpoint, broadcaster: events.Broadcaster) -> supervisor.Supervisor[int]:
    return supervisor.Supervisor[int](
        "fake:///",
        open=endpoint.open,
        watch=endpoint.watch,
        close=endpoint.close,
        retryable=lambda error: isinstance(error, Transient),
        events=broadcaster,
        backoff=(0.001, 0.004),
    )


async def connection_events(stream: events.Subscription, count: int) -> list[tuple[bool, str]]:
    seen = []
    async for event in stream:
        assert isinstance(event, base.ConnectionEvent)
        seen.append((event.connected, event.reason))
        if len(seen) == count:
            break
    return seen


def test_retries_until_connected_then_reconnects_after_a_loss() -> None:
    async def main() -> None:
        endpoint, broadcaster = Endpoint(failures=3), events.Broadcaster()
        stream = broadcaster.subscribe()
        link = supervised(endpoint, broadcaster)
        await asyncio.wait_for(link.connect(), timeout=5)
        assert link.connection == 1
        endpoint.drop("end of file")
        seen = await asyncio.wait_for(connection_events(stream, 3), timeout=5)
        assert seen == [(True, ""), (False, "end of file"), (True, "")]
        assert (link.connection, endpoint.closed) == (2, [1])
        await link.close()
        assert endpoint.closed == [1, 2]
        assert link.connection is None
        assert [event async for event in stream] == [], "close ends every events() iterator"

    asyncio.run(main())


def test_an_error_that_is_not_retryable_ends_connect() -> None:
    async def main() -> None:
        endpoint = Endpoint(fatal=base.PermanentError("no host named esx-9"))
        link = supervised(endpoint, events.Broadcaster())
        with pytest.raises(base.PermanentError, match="esx-9"):
            await asyncio.wait_for(link.connect(), timeout=5)
        await link.close()  # the death was told already: close does not raise it again

    asyncio.run(main())


def test_a_closed_supervisor_refuses_to_connect() -> None:
    async def main() -> None:
        link = supervised(Endpoint(), events.Broadcaster())
        await link.connect()
        await link.close()
        with pytest.raises(base.PermanentError, match="closed"):
            await link.connect()

    asyncio.run(main())
