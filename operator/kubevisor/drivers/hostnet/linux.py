"""`HostNetwork` on Linux: links through pyroute2 (`netlink`), DHCP through dnsmasq
(`dnsmasq`), port security through nftables (`nftables`).

All work runs in one worker thread of the driver's own (pyroute2's synchronous socket and
the subprocesses block), so the agent's event loop never waits on the kernel. One thread,
always the same: pyroute2 opens a netlink socket per thread that uses it, and in another
network namespace each one costs a forked child, which the shared default executor's
threads paid again and again (about 100 ms on the first VM start of a round in
`bench/hostnet.py`). `netns` names the
network namespace that is the host's data plane: None for the agent's own (production); a
testbed host's namespace when several hosts share one machine (their DHCP namespaces then
need distinct `namespace_prefix`es, as in `hostplan.HostFacts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Interface
from pathlib import Path
from typing import TypeVar

from kubevisor.core.network import hostdiff
from kubevisor.core.network.hostdiff import Change
from kubevisor.core.network.hostplan import (
    Bridge,
    DhcpNamespace,
    DhcpServer,
    HostPlan,
    PortSecurity,
    VlanDevice,
    VxlanDevice,
)
from kubevisor.drivers.hostnet import dnsmasq, netlink, nftables
from kubevisor.drivers.hostnet.base import Converged, Failure, HostNetworkError

_UNKNOWN = IPv4Interface("0.0.0.0/32")
T = TypeVar("T")


@dataclass
class _Run:
    """One converge in progress: what the host holds as changes apply."""

    plan: HostPlan
    comment: str | None
    ports: frozenset[PortSecurity]
    applied: list[Change] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)


class LinuxHostNetwork:
    def __init__(
        self, *, state_dir: Path, netns: str | None = None, namespace_prefix: str = "kvdhcp-"
    ) -> None:
        self.netns = netns
        self.namespace_prefix = namespace_prefix
        self.dnsmasq = dnsmasq.Supervisor(state_dir / "dhcp")
        self.dnsmasq.check()
        prefix: Sequence[str] = ("nsenter", f"--net={dnsmasq.NETNS_DIR / netns}") if netns else ()
        self.rules = nftables.Ruleset(prefix)
        self.links = netlink.Links(netns)
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hostnet")

    def close(self) -> None:
        """Release the netlink socket, after the work in progress: an agent that stops
        cancels a converge's coroutine, not its thread, and pyroute2 closes every thread's
        socket at once, so closing under a running request left that thread waiting for a
        reply forever (and the agent's exit waiting for the thread)."""
        with self._lock:
            self.links.close()
        self._worker.shutdown()

    async def observe(self) -> HostPlan:
        return await self._in_worker(lambda: self._observe()[0])

    async def converge(self, plan: HostPlan) -> Converged:
        return await self._in_worker(lambda: self.converge_now(plan))

    async def _in_worker(self, work: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self._locked, work)

    async def remove(self) -> Converged:
        return await self.converge(HostPlan())

    def _locked(self, work: Callable[[], T]) -> T:
        with self._lock:
            return work()

    def _observe(self) -> tuple[HostPlan, str | None]:
        links = self.links.observe()
        comment, ports = self.rules.observe()
        spaces = set()
        for name in netlink.namespaces(self.namespace_prefix) | set(links.veths):
            veth, bridge, network = links.veths.get(name, ("", "", ""))
            address = netlink.namespace_address(name) if veth else None
            spaces.add(DhcpNamespace(name, veth, bridge, address or _UNKNOWN, network))
        plan = HostPlan(
            bridges=links.bridges,
            vlans=links.vlans,
            vxlans=links.vxlans,
            dhcp_namespaces=frozenset(spaces),
            dhcp_servers=frozenset(self.dnsmasq.observe().values()),
            ports=ports,
        )
        return plan, comment

    def converge_now(self, plan: HostPlan) -> Converged:
        """`converge`, synchronously, in the calling thread (benchmarks and tests)."""
        observed, comment = self._observe()
        run = _Run(replace(plan, problems=()), comment, observed.ports)
        batch: list[Change] = []
        for change in hostdiff.changes(observed, run.plan):
            if isinstance(change.element, PortSecurity):
                batch.append(change)
                continue
            self._ports(run, batch)
            batch = []
            self._one(run, change)
        self._ports(run, batch)
        self._forget_stale_files(run.plan)
        return Converged(tuple(run.applied), tuple(run.failed))

    def _one(self, run: _Run, change: Change) -> None:
        try:
            self._apply(run.plan, change)
        except (HostNetworkError, OSError) as error:
            run.failed.append(Failure(change, str(error)))
        else:
            run.applied.append(change)

    def _apply(self, plan: HostPlan, change: Change) -> None:
        before, after = change.before, change.after
        if before is not None and (after is None or hostdiff.recreate(change)):
            self._remove(before)
        if after is None:
            return
        if before is None or hostdiff.recreate(change):
            self._add(plan, after)
        else:
            self._update(before, after)

    def _add(self, plan: HostPlan, element: hostdiff.Element) -> None:
        if isinstance(element, Bridge):
            self.links.add_bridge(element)
        elif isinstance(element, VlanDevice):
            self.links.add_vlan(element)
        elif isinstance(element, VxlanDevice):
            self.links.add_vxlan(element)
        elif isinstance(element, DhcpNamespace):
            self.links.add_dhcp_namespace(element)
            self._restart_server_in(plan, element.name)
        elif isinstance(element, DhcpServer):
            self.dnsmasq.start(element)

    def _update(self, before: hostdiff.Element, after: hostdiff.Element) -> None:
        if isinstance(before, Bridge) and isinstance(after, Bridge):
            self.links.set_uplink(before, after)
        elif isinstance(before, VxlanDevice) and isinstance(after, VxlanDevice):
            add, remove = hostdiff.flood_delta(before, after)
            self.links.set_flood(after.name, add=add, remove=remove)
        elif isinstance(after, DhcpServer):
            self.dnsmasq.reload(after)

    def _remove(self, element: hostdiff.Element) -> None:
        if isinstance(element, DhcpNamespace):
            self.dnsmasq.stop(element.name, forget=False)
            self.links.remove_dhcp_namespace(element.name, element.veth)
        elif isinstance(element, DhcpServer):
            self.dnsmasq.stop(element.namespace, forget=True)
        elif isinstance(element, Bridge | VlanDevice | VxlanDevice):
            self.links.delete(element.name)

    def _restart_server_in(self, plan: HostPlan, namespace: str) -> None:
        """A namespace created again loses the dnsmasq that ran in the old one: start the
        plan's server there now (the server's own change, if any, follows and is harmless)."""
        for server in plan.dhcp_servers:
            if server.namespace == namespace and namespace in self.dnsmasq.namespaces():
                self.dnsmasq.start(server)

    def _ports(self, run: _Run, batch: list[Change]) -> None:
        """One nft transaction for a run of port changes."""
        if not batch:
            return
        gone = {c.before for c in batch if isinstance(c.before, PortSecurity)}
        come = {c.after for c in batch if isinstance(c.after, PortSecurity)}
        wanted = (run.ports - gone) | come
        try:
            run.comment = self.rules.apply(comment=run.comment, current=run.ports, wanted=wanted)
        except (HostNetworkError, OSError) as error:
            run.failed.extend(Failure(change, str(error)) for change in batch)
            return
        run.ports = frozenset(wanted)
        run.applied.extend(batch)

    def _forget_stale_files(self, plan: HostPlan) -> None:
        """dnsmasq files of namespaces neither running nor wanted (after a reboot)."""
        wanted = {server.namespace for server in plan.dhcp_servers}
        running = set(self.dnsmasq.observe())
        for namespace in self.dnsmasq.namespaces() - wanted - running:
            with contextlib.suppress(OSError):
                self.dnsmasq.stop(namespace, forget=True)
