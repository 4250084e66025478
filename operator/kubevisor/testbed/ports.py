"""Free TCP ports on 127.0.0.1 for the testbed's processes (hosts' libvirtd and QEMU
migration listeners), so concurrent test runs on one machine never collide."""

from __future__ import annotations

import random
import socket


class NoFreePorts(RuntimeError):
    """No block of free ports was found."""


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(taken: set[int]) -> int:
    """A port the kernel says is free now and that is not in `taken`."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in taken:
            return port


def free_range(taken: set[int], size: int) -> int:
    """The first port of a free block of `size` ports below the ephemeral range (so
    outgoing connections do not land in it), none of them in `taken`."""
    for _ in range(200):
        low = random.randrange(20000, 32000 - size, size)
        block = range(low, low + size)
        if not taken.intersection(block) and all(port_free(p) for p in block):
            return low
    raise NoFreePorts(f"no free block of {size} ports between 20000 and 32000")
