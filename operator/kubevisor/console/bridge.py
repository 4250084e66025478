"""Copy bytes both ways between two ends until either ends: the one loop every hop runs.

An end is anything with `read()` (b"" at its end), `write(data)` and `close()`: the
guest's `SerialConsole`, or a websocket wrapped in `WebSocketEnd` (binary messages carry
the bytes; text messages are accepted as UTF-8 for clients that cannot send binary).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import aiohttp
from aiohttp import web

from kubevisor.console import protocol


class End(Protocol):
    async def read(self) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class WebSocketEnd:
    """A server- or client-side aiohttp websocket as an `End`."""

    def __init__(self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def read(self) -> bytes:
        while True:
            message = await self.ws.receive()
            if message.type == aiohttp.WSMsgType.BINARY:
                data = bytes(message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                data = str(message.data).encode()
            elif message.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            else:  # CLOSE, CLOSING, CLOSED, ERROR
                return b""
            if data:
                return data

    async def write(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=protocol.STREAM_ENDED, message=b"console stream ended")


async def _copy(source: End, sink: End) -> None:
    while data := await source.read():
        await sink.write(data)


async def bridge(a: End, b: End) -> None:
    """Copy a->b and b->a; when either direction ends or fails, close both ends."""
    tasks = [asyncio.create_task(_copy(a, b)), asyncio.create_task(_copy(b, a))]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            # A reset connection on either side ends the session like a close does.
            with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await a.close()
        await b.close()
