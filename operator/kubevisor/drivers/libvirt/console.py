"""One guest's serial console as an asyncio byte stream, over libvirt virDomainOpenConsole:
what `LibvirtHypervisor.open_console` returns (a `base.Console`).

`SerialConsole.open(uri, uuid)` opens a connection of its own (a console session must not
share the driver's connection, whose calls would queue behind it) and a non-blocking
virStream on the domain's first console. libvirt's event loop thread
(`connection.ensure_event_loop`) reports the stream readable; the callback drains it there
and hands the bytes to the asyncio loop, so `read()` is an ordinary await. Writes go
through the loop's default thread pool, not the driver's (a long console session must not
hold one of its threads); a full stream is retried shortly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import libvirt

from kubevisor.drivers import base
from kubevisor.drivers.libvirt import connection

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
_EVENTS = (
    libvirt.VIR_STREAM_EVENT_READABLE
    | libvirt.VIR_STREAM_EVENT_ERROR
    | libvirt.VIR_STREAM_EVENT_HANGUP
)
_WOULD_BLOCK = -2


class SerialConsole:
    """A bidirectional byte stream to a running domain's serial console."""

    def __init__(self, conn: libvirt.virConnect, stream: libvirt.virStream) -> None:
        self._conn = conn
        self._stream = stream
        self._loop = asyncio.get_running_loop()
        self._incoming = base.ConsoleOutput()
        self._closed = False

    @classmethod
    async def open(cls, uri: str, uuid: str, *, force: bool = False) -> SerialConsole:
        """Attach to the console of the domain `uuid`; `force` takes it from another session.

        Raises DomainNotFound, ConsoleBusy (not running, or in use by another session), or
        HypervisorError when libvirt cannot open it.
        """
        connection.ensure_event_loop()
        loop = asyncio.get_running_loop()
        conn, stream = await loop.run_in_executor(None, _attach, uri, uuid, force)
        console = cls(conn, stream)
        stream.eventAddCallback(_EVENTS, console._on_event, None)
        return console

    def _on_event(self, stream: libvirt.virStream, events: int, _opaque: Any) -> None:
        # On libvirt's event loop thread: drain what is there, then hand it over.
        chunks: list[bytes] = []
        ended = bool(events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP))
        while not ended:
            try:
                data: bytes | int = stream.recv(READ_SIZE)
            except libvirt.libvirtError as error:
                log.info("console stream failed: %s", error)
                ended = True
                break
            if data == _WOULD_BLOCK:
                break
            if not data or isinstance(data, int):
                ended = True
                break
            chunks.append(data)
        if ended:
            with contextlib.suppress(libvirt.libvirtError):
                stream.eventRemoveCallback()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads
            for chunk in chunks:
                self._loop.call_soon_threadsafe(self._incoming.put, chunk)
            if ended:
                self._loop.call_soon_threadsafe(self._incoming.end)

    async def read(self) -> bytes:
        """The next bytes the guest wrote; b"" once the stream has ended."""
        return await self._incoming.read()

    async def write(self, data: bytes) -> None:
        """Send `data` to the guest's console (its tty's input)."""
        view = memoryview(data)
        while view:
            sent = await self._loop.run_in_executor(None, self._stream.send, bytes(view))
            if sent == _WOULD_BLOCK:
                await asyncio.sleep(0.01)  # the stream's buffer is full: let QEMU drain it
                continue
            view = view[sent:]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._loop.run_in_executor(None, _detach, self._conn, self._stream)


def running_domain(uri: str, uuid: str, what: str) -> tuple[libvirt.virConnect, libvirt.virDomain]:
    """A connection of its own and the running domain `uuid` on it, for a session of
    `what` (the console, the display); the caller closes the connection.

    Raises DomainNotFound, ConsoleBusy (not running), or HypervisorError.
    """
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as error:
        raise base.HypervisorError(f"cannot open the {what}: {error}") from error
    try:
        try:
            domain = conn.lookupByUUIDString(uuid)
            active = domain.isActive()
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise base.DomainNotFound("the VM has no domain on its host") from error
            raise base.HypervisorError(f"cannot open the {what}: {error}") from error
        if not active:
            raise base.ConsoleBusy("the VM is not running")
        return conn, domain
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()
        raise


def _attach(uri: str, uuid: str, force: bool) -> tuple[libvirt.virConnect, libvirt.virStream]:
    conn, domain = running_domain(uri, uuid, "console")
    try:
        try:
            stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        except libvirt.libvirtError as error:
            raise base.HypervisorError(f"cannot open the console: {error}") from error
        flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0
        try:
            domain.openConsole(None, stream, flags)
        except libvirt.libvirtError as error:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            if error.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED:
                raise base.ConsoleBusy(
                    f"the console is in use by another session ({error.get_error_message()})"
                ) from error
            raise base.HypervisorError(f"cannot open the console: {error}") from error
        return conn, stream
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()
        raise


def _detach(conn: libvirt.virConnect, stream: libvirt.virStream) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        stream.eventRemoveCallback()
    with contextlib.suppress(libvirt.libvirtError):
        stream.abort()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()
