"""Linux cpuset lists ("0-3,8,10-11"), as HypervisorHost.spec.cpuDedicatedSet and
cpuSharedSet hold them, to and from sets of CPU numbers.

The placement engine parses the admin's sets with `parse`; writers of libvirt XML and
of status call `render`. The schema pattern (kubevisor.api.schema.CPUSET) refuses bad
syntax at the API server, so `parse` raising means a bug or an unvalidated source.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from kubevisor.api.schema import CPUSET

_SYNTAX = re.compile(CPUSET)


def parse(text: str) -> frozenset[int]:
    """CPU numbers in `text`: "0-2,5" -> {0, 1, 2, 5}; "" -> {}. Raises ValueError."""
    text = text.strip()
    if not text:
        return frozenset()
    if not _SYNTAX.match(text):
        raise ValueError(f"{text!r} is not a cpuset list (expected e.g. 0-3,8,10-11)")
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if high < low:
            raise ValueError(f"{text!r}: range {part} runs backwards")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def render(cpus: Iterable[int]) -> str:
    """The shortest cpuset list for `cpus`: [0, 1, 2, 5] -> "0-2,5"; [] -> ""."""
    ranges: list[str] = []
    ordered = sorted(set(cpus))
    start = 0
    for index, cpu in enumerate(ordered):
        if index + 1 < len(ordered) and ordered[index + 1] == cpu + 1:
            continue
        low = ordered[start]
        ranges.append(str(low) if low == cpu else f"{low}-{cpu}")
        start = index + 1
    return ",".join(ranges)
