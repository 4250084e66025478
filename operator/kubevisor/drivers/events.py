"""Fan-out of hypervisor events to `events()` iterators, shared by every driver."""

from __future__ import annotations

import asyncio
import weakref

from kubevisor.drivers import base


class Subscription:
    """One `events()` iterator; subscribed from creation, so nothing after the call is lost."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[base.Event | None] = asyncio.Queue()

    def put(self, event: base.Event) -> None:
        self._queue.put_nowait(event)

    def end(self) -> None:
        self._queue.put_nowait(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> base.Event:
        event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)  # stay ended for later calls
            raise StopAsyncIteration
        return event


class Broadcaster:
    """The subscriptions of one driver; forgotten subscriptions are dropped with them."""

    def __init__(self) -> None:
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._ended = False

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        if self._ended:
            subscription.end()
        else:
            self._subscriptions.add(subscription)
        return subscription

    def publish(self, event: base.Event) -> None:
        for subscription in list(self._subscriptions):
            subscription.put(event)

    def end(self) -> None:
        self._ended = True
        for subscription in list(self._subscriptions):
            subscription.end()
