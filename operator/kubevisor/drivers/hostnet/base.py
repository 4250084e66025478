"""The shape of a host's network data plane driver, and what a converge reports.

The agent holds one `HostNetwork` (a `LinuxHostNetwork` in production, a `FakeHostNetwork`
in its unit tests). It computes the host's desired state with `core.network.hostplan.desired`
from a complete listing of the VMs bound to the host, and calls `converge(plan)` before it
starts a VM (or accepts one migrating in) and after VMs or peers change. `converge` observes
the host, applies `core.network.hostdiff.changes` in order and returns what it did: an agent
that restarts finds its bridges, VXLAN devices, dnsmasq processes and rules as they are and
changes nothing that is already right (so running guests keep their network). A change that
fails does not stop the others; it is reported with the reason. `remove()` takes away
everything kubevisor owns on the host (agent uninstall, tests).

Every method is a coroutine that never blocks the agent's event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kubevisor.core.network.hostdiff import Change
from kubevisor.core.network.hostplan import HostPlan


class HostNetworkError(Exception):
    """One change could not be applied; the message says what and why."""


@dataclass(frozen=True, slots=True)
class Failure:
    change: Change
    reason: str


@dataclass(frozen=True, slots=True)
class Converged:
    """What one converge did: the changes applied, in order, and those that failed."""

    applied: tuple[Change, ...] = ()
    failed: tuple[Failure, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.failed)


class HostNetwork(Protocol):
    async def observe(self) -> HostPlan:
        """What kubevisor owns on the host now, in `hostplan`'s values (no problems)."""
        ...

    async def converge(self, plan: HostPlan) -> Converged:
        """Make the host hold `plan` and nothing else of kubevisor's."""
        ...

    async def remove(self) -> Converged:
        """Take away every bridge, device, namespace, dnsmasq and rule kubevisor owns here."""
        ...
