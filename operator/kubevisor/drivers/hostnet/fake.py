"""An in-memory `HostNetwork` for the agent's unit tests: it holds a plan, converges by
`core.network.hostdiff` like the real one, records every converge, and can be told to fail
the changes of chosen elements (`fail`)."""

from __future__ import annotations

from dataclasses import replace

from kubevisor.core.network import hostdiff
from kubevisor.core.network.hostdiff import Change, Element
from kubevisor.core.network.hostplan import HostPlan
from kubevisor.drivers.hostnet.base import Converged, Failure

_FIELDS = {
    "Bridge": "bridges",
    "VlanDevice": "vlans",
    "VxlanDevice": "vxlans",
    "DhcpNamespace": "dhcp_namespaces",
    "DhcpServer": "dhcp_servers",
    "PortSecurity": "ports",
}


class FakeHostNetwork:
    def __init__(self, state: HostPlan | None = None) -> None:
        self.state = state if state is not None else HostPlan()
        self.history: list[Converged] = []
        self.failing: dict[type[Element], str] = {}

    def fail(self, kind: type[Element], reason: str) -> None:
        """Make every later change of elements of `kind` fail with `reason`."""
        self.failing[kind] = reason

    async def observe(self) -> HostPlan:
        return self.state

    async def converge(self, plan: HostPlan) -> Converged:
        applied: list[Change] = []
        failed: list[Failure] = []
        for change in hostdiff.changes(self.state, replace(plan, problems=())):
            reason = self.failing.get(type(change.element))
            if reason is not None:
                failed.append(Failure(change, reason))
                continue
            self.state = _apply(self.state, change)
            applied.append(change)
        result = Converged(tuple(applied), tuple(failed))
        self.history.append(result)
        return result

    async def remove(self) -> Converged:
        return await self.converge(HostPlan())


def _apply(state: HostPlan, change: Change) -> HostPlan:
    name = _FIELDS[type(change.element).__name__]
    elements: frozenset[Element] = getattr(state, name)
    if change.before is not None:
        elements = elements - {change.before}
    if change.after is not None:
        elements = elements | {change.after}
    changed: dict[str, object] = {name: elements}
    return replace(state, **changed)  # type: ignore[arg-type]
