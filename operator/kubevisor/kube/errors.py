"""How the access layer's callers tell Kubernetes failures apart: gone, transient, too old.

The agent and the controller retry what `is_transient` accepts (`retrying`), treat
`is_not_found` as "deleted while we worked", and list again on `Gone` (a watch's
resourceVersion the server no longer keeps).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
from kubernetes.aio.client.exceptions import ApiException

T = TypeVar("T")
log = logging.getLogger("kubevisor.kube")


class Gone(Exception):
    """The watch's resourceVersion is too old (HTTP 410): list again."""


def is_not_found(error: BaseException) -> bool:
    """The object is gone (deleted while we worked on it): nothing left to write."""
    return isinstance(error, ApiException) and error.status == 404


def is_transient(error: BaseException) -> bool:
    """Errors worth retrying unchanged: throttling, server trouble, a dropped connection."""
    if isinstance(error, ApiException):
        return error.status in (408, 429, 500, 502, 503, 504)
    return isinstance(error, (aiohttp.ClientError, asyncio.TimeoutError, OSError))


async def retrying(what: str, call: Callable[[], Awaitable[T]], *, cap: float = 10.0) -> T:
    """Await `call()` until it succeeds, backing off on transient errors (others raise)."""
    delay = 0.2
    while True:
        try:
            return await call()
        except Exception as error:
            if not is_transient(error):
                raise
            log.warning("%s failed (%s); retrying in %.1fs", what, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)
