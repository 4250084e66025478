"""One guest's VNC display and screenshots, over libvirt: what `LibvirtHypervisor.open_display`
and `LibvirtHypervisor.screenshot` return.

The domain's VNC server listens on a UNIX socket in the domain's private directory, never
on an address (`core.domain.devices.graphics`); the agent does not need its path:
virDomainOpenGraphicsFD hands it a socket already connected to that server (QEMU's
`add_client`, authentication skipped: the agent's endpoint authorized the user). The byte
stream is RFB from the server's first byte on, which `open_display` returns as a
`base.StreamConsole`.

virDomainScreenshot streams the display's current frame as PPM; Pillow converts it to PNG.
Both open a connection of their own, like `console.SerialConsole`, so a long session or a
large frame never queues the driver's calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
from collections.abc import Callable
from typing import TypeVar

import libvirt
from PIL import Image

from kubevisor.drivers import base
from kubevisor.drivers.libvirt import console

T = TypeVar("T")


async def open_display(uri: str, uuid: str) -> base.StreamConsole:
    """A fresh client connection to the VNC server of the running domain `uuid`.

    Raises DomainNotFound, ConsoleBusy (not running), ConsoleUnsupported (the domain has
    no VNC display, e.g. defined before displays were rendered), or HypervisorError.
    """
    loop = asyncio.get_running_loop()
    fd = await loop.run_in_executor(None, _with_domain, uri, uuid, "display", _graphics_fd)
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    return base.StreamConsole(reader, writer)


async def screenshot(uri: str, uuid: str) -> bytes:
    """The running domain's screen now, as PNG."""
    loop = asyncio.get_running_loop()
    frame = await loop.run_in_executor(None, _with_domain, uri, uuid, "screenshot", _frame)
    return await loop.run_in_executor(None, png, frame)


def png(image: bytes) -> bytes:
    """`image` (PPM, or any format Pillow reads) as PNG."""
    out = io.BytesIO()
    with Image.open(io.BytesIO(image)) as frame:
        frame.save(out, format="PNG")
    return out.getvalue()


def _with_domain(
    uri: str, uuid: str, what: str, use: Callable[[libvirt.virConnect, libvirt.virDomain], T]
) -> T:
    conn, domain = console.running_domain(uri, uuid, what)
    try:
        try:
            return use(conn, domain)
        except libvirt.libvirtError as error:
            if error.get_error_code() in (
                libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
                libvirt.VIR_ERR_OPERATION_INVALID,
                libvirt.VIR_ERR_NO_SUPPORT,
            ):
                # A system container has no screen; a VM defined before displays were
                # rendered gets one when it is restarted.
                raise base.ConsoleUnsupported(
                    f"the VM has no VNC display here ({error.get_error_message()})"
                ) from error
            if error.get_error_code() in (
                libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
                libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
            ):
                raise base.ConsoleUnsupported(
                    f"cannot open the {what} over {uri} ({error.get_error_message()}): the "
                    "display's socket is passed as a file descriptor, which needs the agent's "
                    "--libvirt-uri to be the host's local UNIX socket (qemu:///system)"
                ) from error
            raise base.HypervisorError(f"cannot open the {what}: {error}") from error
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def _graphics_fd(_conn: libvirt.virConnect, domain: libvirt.virDomain) -> int:
    return int(domain.openGraphicsFD(0, libvirt.VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH))


def _frame(conn: libvirt.virConnect, domain: libvirt.virDomain) -> bytes:
    stream = conn.newStream(0)
    try:
        domain.screenshot(stream, 0, 0)
        chunks: list[bytes] = []

        def sink(_stream: libvirt.virStream, data: bytes, _opaque: object) -> int:
            chunks.append(data)
            return len(data)

        stream.recvAll(sink, None)
        stream.finish()
        return b"".join(chunks)
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise
