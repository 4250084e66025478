"""The connection supervision every driver shares: connect, back off, publish, reconnect.

A driver hands a `Supervisor` three coroutines: `open` (connect; an error `retryable`
accepts is retried with capped exponential back-off, any other ends the supervisor and
`connect()` raises it), `watch` (return once the connection is lost, saying why) and
`close` (let go of one connection). The supervisor runs them in one task, keeps the
current connection (`connection`, None while there is none), and publishes a
`ConnectionEvent` to the driver's `events()` subscribers on every gain and loss, so the
agent resyncs after what it may have missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Generic, TypeVar

from kubevisor.drivers import base, events

log = logging.getLogger(__name__)
C = TypeVar("C")


def backoff_delays(initial: float, cap: float) -> Iterator[float]:
    """Capped exponential back-off: initial, 2*initial, 4*initial, ..., cap, cap, ..."""
    delay = initial
    while True:
        yield delay
        delay = min(delay * 2, cap)


class Supervisor(Generic[C]):
    """Owns one driver's connection of type C to the hypervisor at `uri`."""

    def __init__(
        self,
        uri: str,
        *,
        open: Callable[[], Awaitable[C]],
        watch: Callable[[C], Awaitable[str]],
        close: Callable[[C], Awaitable[None]],
        retryable: Callable[[Exception], bool],
        events: events.Broadcaster,
        backoff: tuple[float, float] = (0.5, 30.0),
        name: str = "connection",
        logger: logging.Logger = log,
    ) -> None:
        self._uri = uri
        self._open = open
        self._watch = watch
        self._close = close
        self._retryable = retryable
        self._events = events
        self._backoff = backoff
        self._name = name
        self._log = logger
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._connection: C | None = None
        self._closed = False

    @property
    def connection(self) -> C | None:
        """The live connection; None before the first and between a loss and the next."""
        return self._connection

    async def connect(self) -> None:
        """Start supervising (once) and wait until connected; raises what ended the
        supervisor if it could not connect for good, PermanentError once closed."""
        if self._closed:
            raise base.PermanentError(f"driver for {self._uri} is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"{self._name} {self._uri}")
        connected = asyncio.ensure_future(self._connected.wait())
        done, _ = await asyncio.wait({connected, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if connected not in done:
            connected.cancel()
            self._task.result()  # re-raise what killed the supervisor

    async def close(self) -> None:
        """Stop supervising, let go of the connection and end every `events()` iterator."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            # A supervisor that died (bad credentials, no such host) told `connect` already.
            with contextlib.suppress(asyncio.CancelledError, base.HypervisorError):
                await self._task
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await self._close(connection)
        self._connected.clear()
        self._events.end()

    async def _supervise(self) -> None:
        delays = backoff_delays(*self._backoff)
        while True:
            try:
                connection = await self._open()
            except Exception as error:
                if not self._retryable(error):
                    raise
                delay = next(delays)
                self._log.warning(
                    "connecting to %s failed, retrying in %.1fs: %s", self._uri, delay, error
                )
                await asyncio.sleep(delay)
                continue
            delays = backoff_delays(*self._backoff)
            self._connection = connection
            self._connected.set()
            self._log.info("connected to %s", self._uri)
            self._events.publish(base.ConnectionEvent(self._uri, connected=True))
            reason = await self._watch(connection)
            self._connected.clear()
            self._connection = None
            self._log.warning("lost connection to %s: %s", self._uri, reason)
            self._events.publish(base.ConnectionEvent(self._uri, False, reason))
            await self._close(connection)
