"""Which host PCI devices a request gets: free ones of each alias, NUMA-local first.

Called by `placement.filters.pci_devices` (is there enough?) and by
`placement.scheduler.evaluate` (which ones, once the NUMA fit is known). Nova's
"preferred" NUMA affinity policy: devices on the host cells the guest's cells landed
on come first, then devices with no NUMA cell, then devices on other cells; ties by
address, so the choice is stable. Never mutates inputs.
"""

from __future__ import annotations

from collections.abc import Iterable

from kubevisor.core.placement.model import (
    HostSnapshot,
    PciClaim,
    PciDevice,
    Rejection,
    Request,
)

FILTER = "pci_devices"


def _order(device: PciDevice, local: frozenset[int]) -> tuple[int, str]:
    if device.numa_cell is not None and device.numa_cell in local:
        rank = 0
    elif device.numa_cell is None:
        rank = 1
    else:
        rank = 2
    return (rank, device.address)


def assign(
    *,
    host: HostSnapshot,
    in_use: frozenset[str],
    request: Request,
    local_cells: Iterable[int] = (),
) -> tuple[PciClaim, ...] | Rejection:
    """Specific free devices for every alias of `request.pci`, or why the host lacks them."""
    local = frozenset(local_cells)
    claims: list[PciClaim] = []
    for wanted in request.pci:
        free = sorted(
            (d for d in host.pci_devices if d.alias == wanted.alias and d.address not in in_use),
            key=lambda d: _order(d, local),
        )
        if len(free) < wanted.count:
            return Rejection(
                FILTER,
                f'insufficient PCI devices "{wanted.alias}"',
                f"host {host.name} has {len(free)} free {wanted.alias} devices, "
                f"needs {wanted.count}",
                need=wanted.count,
                free=len(free),
                unit="devices",
            )
        claims.extend(PciClaim(wanted.alias, d.address) for d in free[: wanted.count])
    return tuple(claims)
