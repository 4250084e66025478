"""Linux cpuset lists ("0-3,8,10-11"), as HypervisorHost.spec.cpuDedicatedSet and
cpuSharedSet hold them, to and from sets of CPU numbers.

The placement engine parses the admin's sets with `parse`; writers of libvirt XML and
of status call `render`. The CRD schema checks the same grammar and bounds with CEL rules
(kubevisor.api.schema.CpuSet), so a set the API server stored always parses here; `parse`
still checks everything itself, as an object stored before these rules may not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

# CPU numbers are below this: Linux's largest x86-64 build (CONFIG_MAXSMP) has
# NR_CPUS = 8192, so no host has a CPU numbered higher. It also bounds what a set can cost:
# at most 8192 numbers, however the ranges are written.
MAX_CPUS: Final = 8192
# Ranges (or single CPUs) in one list: real sets have a few ("2-31,34-63"); the bound
# keeps the API server's CEL cost estimate of the overlap rule small.
MAX_RANGES: Final = 64
MAX_LENGTH: Final = MAX_RANGES * len("8191-8191,") - 1

# The grammar as Python's re and RE2 (CEL's matches()) read it alike: numbers of at most
# four digits, at most MAX_RANGES entries.
PATTERN: Final = (
    r"^[0-9]{1,4}(-[0-9]{1,4})?(,[0-9]{1,4}(-[0-9]{1,4})?){0," + str(MAX_RANGES - 1) + "}$"
)

FORMAT_MESSAGE: Final = (
    f"must be a list of CPU numbers and ranges such as 0-3,8,10-11, at most {MAX_RANGES} entries"
)
LIMIT_MESSAGE: Final = f"CPU numbers must be below {MAX_CPUS}"
ORDER_MESSAGE: Final = "each range must run upwards, e.g. 2-7 (not 7-2)"

_GRAMMAR = re.compile(PATTERN)


class CpuSetError(ValueError):
    """A string that is not a cpuset list kubevisor accepts."""


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "...")


def parse(text: str) -> frozenset[int]:
    """CPU numbers in `text`: "0-2,5" -> {0, 1, 2, 5}; "" -> {}. Raises CpuSetError.

    Bounded in time and memory whatever `text` is: its length is checked first and the
    numbers are checked against MAX_CPUS before any range is expanded."""
    if not text:
        return frozenset()
    if len(text) > MAX_LENGTH or _GRAMMAR.fullmatch(text) is None:
        raise CpuSetError(f"{_shown(text)}: {FORMAT_MESSAGE}")
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if high >= MAX_CPUS or low >= MAX_CPUS:
            raise CpuSetError(f"{_shown(text)}: {LIMIT_MESSAGE}")
        if high < low:
            raise CpuSetError(f"{_shown(text)}: range {part} runs backwards; {ORDER_MESSAGE}")
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
