"""From what a host has to what it should have: the ordered changes, decided purely.

`drivers.hostnet` observes the host into a `HostPlan` (the same values `hostplan.desired`
returns), asks `changes(observed, desired)` and applies the result in order: first what goes
(port rules, DHCP servers, namespaces, VXLAN and VLAN devices, bridges), then what comes or
changes (the other way round). Equal elements produce nothing, which is why an agent that
restarts adopts its host as it finds it and a second converge is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from kubevisor.core.network.hostplan import (
    Bridge,
    DhcpNamespace,
    DhcpServer,
    HostPlan,
    PortSecurity,
    VlanDevice,
    VxlanDevice,
)

Element = Bridge | VlanDevice | VxlanDevice | DhcpNamespace | DhcpServer | PortSecurity


@dataclass(frozen=True, slots=True)
class Change:
    """One element to add (before None), remove (after None) or update (both set)."""

    before: Element | None
    after: Element | None

    @property
    def action(self) -> str:
        if self.before is None:
            return "add"
        return "remove" if self.after is None else "update"

    @property
    def element(self) -> Element:
        found = self.after if self.after is not None else self.before
        assert found is not None, "a change has a before or an after"
        return found


def _key(element: Element) -> Hashable:
    if isinstance(element, DhcpServer):
        return element.namespace
    if isinstance(element, PortSecurity):
        return element.tap
    return element.name


# Dependency order: a VXLAN device joins a bridge, a DHCP server runs in its namespace.
_KINDS: tuple[Callable[[HostPlan], Iterable[Element]], ...] = (
    lambda plan: plan.bridges,
    lambda plan: plan.vlans,
    lambda plan: plan.vxlans,
    lambda plan: plan.dhcp_namespaces,
    lambda plan: plan.dhcp_servers,
    lambda plan: plan.ports,
)


def _kind(observed: Iterable[Element], desired: Iterable[Element]) -> list[Change]:
    have = {_key(e): e for e in observed}
    want = {_key(e): e for e in desired}
    found = [Change(have[k], want.get(k)) for k in sorted(have, key=str) if have[k] != want.get(k)]
    return found + [Change(None, want[k]) for k in sorted(want, key=str) if k not in have]


def changes(observed: HostPlan, desired: HostPlan) -> tuple[Change, ...]:
    """What to do, in order, so the host holds `desired` and nothing else of kubevisor's."""
    per_kind = [_kind(kind(observed), kind(desired)) for kind in _KINDS]
    removals = [c for kind in reversed(per_kind) for c in kind if c.action == "remove"]
    rest = [c for kind in per_kind for c in kind if c.action != "remove"]
    return tuple(removals + rest)


def recreate(change: Change) -> bool:
    """Whether an update must delete and create the element again: a VXLAN device keeps its
    VNI, endpoint and port for life, a VLAN device its uplink and id, a DHCP namespace its
    veth; a DHCP server restarts when anything but its hosts changes (they are re-read on
    SIGHUP). Bridges (uplink swapped) and flood lists and port rules change in place."""
    before, after = change.before, change.after
    if isinstance(before, VxlanDevice) and isinstance(after, VxlanDevice):
        return (before.vni, before.local, before.port, before.bridge) != (
            after.vni,
            after.local,
            after.port,
            after.bridge,
        )
    if isinstance(before, DhcpServer) and isinstance(after, DhcpServer):
        return _without_hosts(before) != _without_hosts(after)
    return isinstance(before, VlanDevice | DhcpNamespace)


def _without_hosts(server: DhcpServer) -> tuple[object, ...]:
    return (server.subnet, server.gateway, server.dns_servers, server.mtu)


def flood_delta(
    before: VxlanDevice, after: VxlanDevice
) -> tuple[frozenset[IPv4Address], frozenset[IPv4Address]]:
    """(endpoints to add, endpoints to remove) from a VXLAN device's flood list."""
    return after.flood - before.flood, before.flood - after.flood
