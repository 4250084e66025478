"""pyroute2's forked children (how it reaches another network namespace) must not deliver
their signals to the agent: a child inherits asyncio's wakeup fd, so a SIGTERM pyroute2
sent it came out of the agent's event loop as the agent's own SIGTERM, and the agent
stopped (drivers/hostnet/netlink.py). No root, no namespace: a child that is still alive
when pyroute2 ends it is all it takes."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from pyroute2.process import ChildProcess

from kubevisor.drivers.hostnet import netlink


def _busy(started: int) -> bytes:
    os.write(started, b"x")
    time.sleep(2)
    return b""


def test_ending_a_pyroute2_child_does_not_signal_the_agents_event_loop() -> None:
    assert netlink.ALIAS  # the module's import is what installs the protection

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        received = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, received.set)
        try:

            def fork_and_end() -> None:
                readable, writable = os.pipe()
                child = ChildProcess(target=_busy, args=[writable])
                child.run()
                os.read(readable, 1)  # the child runs its target, as when pyroute2 ends it
                child.stop()  # SIGTERM to a child that is still running, then waitpid
                os.close(readable)
                os.close(writable)

            await asyncio.to_thread(fork_and_end)
            # A byte in the wakeup fd is read, and its handler run, within a few turns.
            for _ in range(10):
                await asyncio.sleep(0)
            return received.is_set()
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    assert not asyncio.run(main()), "the child's SIGTERM reached the parent's event loop"
