"""Helpers of the driver tests: waiting for a domain's events, checking its state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from kubevisor.drivers import base


async def events_until(
    events: AsyncIterator[base.Event],
    uuid: str,
    kind: base.EventKind,
    detail: str | None = None,
    *,
    timeout: float = 30,
) -> list[base.DomainEvent]:
    """The domain's events up to the first of `kind` (and `detail`, if given); libvirt
    delivers them asynchronously, so events of operations done before subscribing may
    still come first."""

    async def wait() -> list[base.DomainEvent]:
        seen = []
        async for event in events:
            if isinstance(event, base.DomainEvent) and event.uuid == uuid:
                seen.append(event)
                if event.kind is kind and detail in (None, event.detail):
                    return seen
        raise AssertionError(f"event stream ended before {kind}: {seen}")

    return await asyncio.wait_for(wait(), timeout=timeout)


async def expect_state(
    hypervisor: base.Hypervisor, uuid: str, state: base.DomainState, reason: str
) -> None:
    info = await hypervisor.state(uuid)
    assert (info.state, info.reason) == (state, reason)
