"""How placement's amounts read in messages: memory and disk as the Kubernetes quantities
users write in specs (exact: 1536Mi, never a rounded 1.5Gi), counts as plain numbers.

Called by the filters, NUMA fitting and explanations, so a rejection and the summary line
built from it quote the same figures.
"""

from __future__ import annotations

from kubevisor.api import quantity

MIB = "MiB"
"""The unit of a Rejection's memory and disk figures (placement's unit for both)."""


def mib(amount: int) -> str:
    """A MiB amount as a quantity: 8192 -> 8Gi, 1530 -> 1530Mi, 0 -> 0Mi, -512 -> -512Mi."""
    if amount <= 0:
        return f"{amount}Mi"
    return quantity.format_bytes(amount * quantity.MI)


def page_size(kib: int) -> str:
    """A huge page size as `memory.hugepages.pageSize` spells it: 2048 -> 2Mi."""
    return quantity.format_bytes(kib * 1024)


def amount(value: int, unit: str) -> str:
    """`value` in `unit`: MiB as a quantity, other units after the number."""
    if unit == MIB:
        return mib(value)
    if unit:
        return f"{value} {unit}"
    return str(value)
