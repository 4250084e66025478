"""Resize in place: a bound VM's new size checked against its own host, then claimed.

A changed spec takes effect when the domain is next defined (a restart). Before that, the
controller calls `resize` with the VM's new request: its current claim is set aside, the
new size goes through the placement filters on the same host (as Nova's resize to the same
host would), and either the new claim is held or the old one is put back untouched. The
state never holds both, never neither: host usage always equals the sum of the claims.

The filters about the host's state (Ready, cordoned, in maintenance) and the request's
excluded hosts are left out: the VM is already there, and a cordon stops new VMs, not the
restart of one it holds. Everything about size and fit (capacity at the ratios, physical
CPUs, dedicated CPUs, huge pages, NUMA cells, PCI devices, CPU model) is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubevisor.core.placement import filters, scheduler, units
from kubevisor.core.placement.model import Claim, Rejection, Request
from kubevisor.core.placement.state import PlacementState

_STAYING = (filters.excluded, filters.ready, filters.schedulable, filters.numa)
CHECKS: tuple[filters.Filter, ...] = tuple(f for f in filters.FILTERS if f not in _STAYING)
"""The filters a resize passes on the VM's own host (NUMA fitting comes after them)."""


@dataclass(frozen=True, slots=True)
class Resized:
    """The new size fits: `claim` is held now, in place of `previous` (None: the VM held
    no claim, e.g. bound before the controller knew its host)."""

    claim: Claim
    previous: Claim | None


@dataclass(frozen=True, slots=True)
class Refused:
    """The new size does not fit on the host; the old claim is held as before."""

    rejection: Rejection
    request: Request
    host: str

    @property
    def message(self) -> str:
        """One line with the figures: why the VM does not start there at its new size."""
        return (
            f"resize to {describe(self.request)} refused on host {self.host}: "
            f"{self.rejection.reason}"
        )


def describe(request: Request) -> str:
    """A request's size as a user reads it: "8 vCPUs, 1Gi memory (2Mi huge pages)"."""
    memory = f"{units.mib(request.memory_mib)} memory"
    if request.hugepage_kib:
        memory += f" ({units.page_size(request.hugepage_kib)} huge pages)"
    parts = [f"{request.vcpus} {'dedicated ' if request.dedicated else ''}vCPUs", memory]
    if request.disk_mib:
        parts.append(f"{units.mib(request.disk_mib)} disk")
    return ", ".join(parts)


def resize(state: PlacementState, request: Request, *, host: str) -> Resized | Refused:
    """Claim `request` (the VM's new size; `request.name` is the VM) on `host`, where the
    VM is bound, in place of the claim it holds; or refuse, keeping that claim.

    Changes `state` only when the new size fits. The caller holds the lock its placements
    take, so no placement sees the state between the release and the new claim.
    """
    previous = state.release(request.name)
    found = scheduler.evaluate(state, request, host, checks=CHECKS)
    if isinstance(found, Rejection):
        if previous is not None:
            state.claim(previous)
        return Refused(rejection=found, request=request, host=host)
    claim = scheduler.claim_for(request, host=host, fit=found.numa)
    state.claim(claim)
    return Resized(claim=claim, previous=previous)
