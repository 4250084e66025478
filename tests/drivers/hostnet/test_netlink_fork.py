"""pyroute2's forked children (how it reaches another network namespace) must not deliver
their signals to the agent: a child inherits asyncio's wakeup fd, so a SIGTERM pyroute2
sent it came out of the agent's event loop as the agent's own SIGTERM, and the agent
stopped (drivers/hostnet/netlink.py). No root, no namespace: a child that is still alive
when pyroute2 ends it is all it takes."""

from __future__ import annotations

import asyncio
import os
import select
import signal

from pyroute2.process import ChildProcess

from kubevisor.drivers.hostnet import netlink


def _running(started: int, held: int) -> bytes:
    """The child: says it runs, then blocks on `held`, a pipe nobody writes, until the
    parent ends it (the bound only keeps a child that survives SIGTERM from hanging)."""
    os.write(started, b"x")
    select.select([held], [], [], 60)
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
                held, never_written = os.pipe()
                child = ChildProcess(target=_running, args=[writable, held])
                child.run()
                os.read(readable, 1)  # the child runs its target, as when pyroute2 ends it
                child.stop()  # SIGTERM to a child that is still running, then waitpid
                for fd in (readable, writable, held, never_written):
                    os.close(fd)

            await asyncio.to_thread(fork_and_end)
            # A byte in the wakeup fd is read, and its handler run, within a few turns.
            for _ in range(10):
                await asyncio.sleep(0)
            return received.is_set()
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    assert not asyncio.run(main()), "the child's SIGTERM reached the parent's event loop"
