"""The libvirt driver's connection: libvirt's event loop thread, the supervised
connection and the thread pool its blocking calls run on.

libvirt delivers events on its own event loop, which is process-wide: it runs in one
daemon thread (`libvirt-events`), and its callbacks hand each event to the agent's loop
with `call_soon_threadsafe`. A `drivers.supervisor.Supervisor` owns the connection: it
connects, registers the lifecycle and close callbacks, waits for the connection to drop
(libvirtd restarted, keepalive timed out, EOF), publishes `ConnectionEvent`s and
reconnects with capped exponential back-off. Blocking libvirt calls run on a small thread
pool, so the agent's event loop never blocks; their errors become the driver's
(`errors.translate_error`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from kubevisor.drivers import base, events, supervisor
from kubevisor.drivers.libvirt import errors, facts

log = logging.getLogger("kubevisor.drivers.libvirt")
T = TypeVar("T")

# --- libvirt's process-wide event loop -----------------------------------------------------

_event_loop_lock = threading.Lock()
_event_loop_thread: threading.Thread | None = None


def _ignore_libvirt_error(_opaque: object, _error: object) -> None:
    """libvirt prints every error to stderr by default; ours arrive as exceptions instead."""


def _run_libvirt_events() -> None:
    while True:
        if libvirt.virEventRunDefaultImpl() < 0:
            log.error("libvirt event loop iteration failed")


def ensure_event_loop() -> None:
    """Start libvirt's event loop thread, once per process.

    libvirt allows one event loop implementation per process, and a connection delivers
    events (and a stream its callbacks) only if the implementation was registered before
    it was opened, so this runs before every open. It is the one piece of process state in
    the driver.
    """
    global _event_loop_thread
    with _event_loop_lock:
        if _event_loop_thread is not None:
            return
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        libvirt.virEventRegisterDefaultImpl()
        _event_loop_thread = threading.Thread(
            target=_run_libvirt_events, name="libvirt-events", daemon=True
        )
        _event_loop_thread.start()


_CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by client",
}


class Connection:
    """The supervised connection to `uri` of one `LibvirtHypervisor`.

    Lifecycle events go to `on_lifecycle` on the agent's loop; connection events to the
    `events` subscribers (by the supervisor).
    """

    def __init__(
        self,
        uri: str,
        *,
        events: events.Broadcaster,
        on_lifecycle: Callable[[base.DomainEvent], None],
        backoff: tuple[float, float],
        keepalive: tuple[int, int],
        threads: int,
    ) -> None:
        self.uri = uri
        self.keepalive = keepalive
        self._on_event = on_lifecycle
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="libvirt-calls"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost = asyncio.Event()
        self._lost_reason = ""
        self._supervisor = supervisor.Supervisor[libvirt.virConnect](
            uri,
            open=self._open,
            watch=self._until_lost,
            close=lambda conn: self.in_thread(_close_connection, conn),
            retryable=lambda error: isinstance(error, libvirt.libvirtError),
            events=events,
            backoff=backoff,
            name="libvirt-connection",
            logger=log,
        )

    async def connect(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        await self._supervisor.connect()

    async def close(self) -> None:
        await self._supervisor.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _open(self) -> libvirt.virConnect:
        conn = await self.in_thread(self._open_blocking)
        self._lost.clear()
        return conn

    def _open_blocking(self) -> libvirt.virConnect:
        ensure_event_loop()
        conn = libvirt.open(self.uri)
        # Keepalive and close callbacks exist only for remote connections; a local driver
        # (test:///) refuses them and cannot drop anyway.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(*self.keepalive)
        with contextlib.suppress(libvirt.libvirtError):
            conn.registerCloseCallback(self._on_close, None)
        conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
        )
        return conn

    async def _until_lost(self, _conn: libvirt.virConnect) -> str:
        await self._lost.wait()
        return self._lost_reason

    def _mark_lost(self, conn: libvirt.virConnect, reason: str) -> None:
        if conn is self._supervisor.connection and not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()

    # --- callbacks from libvirt's event loop thread ---

    def _on_close(self, conn: libvirt.virConnect, reason: int, _opaque: object) -> None:
        self._to_loop(self._mark_lost, conn, _CLOSE_REASONS.get(reason, f"reason {reason}"))

    def _on_lifecycle(
        self,
        _conn: libvirt.virConnect,
        domain: libvirt.virDomain,
        event: int,
        detail: int,
        _opaque: object,
    ) -> None:
        # name() and UUIDString() read the handle's cached fields: no RPC in this thread.
        self._to_loop(
            self._on_event, facts.domain_event(domain.UUIDString(), domain.name(), event, detail)
        )

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(callback, *args)

    # --- calls ---

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking `fn(*args)` on the driver's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def call(self, doing: str, fn: Callable[[libvirt.virConnect], T]) -> T:
        """`fn(connection)` on the driver's threads, its libvirt errors translated; a
        connection that died under it is marked lost (the supervisor reconnects)."""
        conn = self._supervisor.connection
        if conn is None:
            raise base.RetryableError(f"{doing}: not connected to {self.uri}", delay=2.0)
        try:
            return await self.in_thread(fn, conn)
        except libvirt.libvirtError as error:
            if error.get_error_code() in errors.CONNECTION_ERRORS and not await self.in_thread(
                _is_alive, conn
            ):
                self._mark_lost(conn, str(error))
            raise errors.translate_error(error, doing=doing) from error

    async def domain_call(self, doing: str, uuid: str, fn: Callable[[libvirt.virDomain], T]) -> T:
        """`call` on the domain `uuid`."""
        return await self.call(f"{doing} {uuid}", lambda conn: fn(conn.lookupByUUIDString(uuid)))


def _close_connection(conn: libvirt.virConnect) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        conn.domainEventDeregisterAny(libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE)
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def _is_alive(conn: libvirt.virConnect) -> bool:
    try:
        alive: int = conn.isAlive()
    except libvirt.libvirtError:
        return False
    return alive == 1
