"""Which images the host's image cache evicts (not VM eviction): the unused ones, by age and size.

An image is unused when no VM disk on the host is backed by it, no bound VM waits for it
and no download writes it (the agent knows; `CachedFile.in_use` carries the verdict).
Unused images go when their last use is older than `max_unused` seconds, and, while the
cache is still larger than `max_bytes`, oldest last use first. An image in use is never
evicted, however full the cache: a VM's disk depends on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedFile:
    """One image in the cache, as the agent found it."""

    sha256: str
    size: int
    last_used: float
    """Seconds since the epoch (the file's mtime, touched on every use)."""
    in_use: bool


def choose(
    files: Iterable[CachedFile], *, now: float, max_bytes: int, max_unused: float
) -> list[CachedFile]:
    """The files to evict, in the order to evict them."""
    files = tuple(files)
    unused = sorted((f for f in files if not f.in_use), key=lambda f: (f.last_used, f.sha256))
    total = sum(f.size for f in files)
    evict = []
    for candidate in unused:
        if now - candidate.last_used > max_unused or total > max_bytes:
            evict.append(candidate)
            total -= candidate.size
    return evict
