"""This host's data plane for the VMs on it: bridges, VXLAN, DHCP and port rules.

`HostNetworking` follows the Networks (all namespaces) and the HypervisorHosts (for the
other hosts' tunnel endpoints and this host's physical-network mappings), reads the VMs of
this host from the agent's `BoundVms`, and converges the host through its `HostNetwork`
driver to `core.network.hostplan.desired` of them (inputs from `core.network.hostinputs`):

- the reconciler calls `attach` before it defines and starts a domain, the migrator before
  it publishes the target's domain (`Preparing`): the VM's networks are realised first,
  and the renderer gets where each interface plugs in (`domain.host.Nic`);
- a VM counts here while it is bound (or migrating in) and, after it left, until its
  domain is gone (`BoundVms.known_uids`): the source of a migration keeps the network
  until the VM has left, a deleted VM's network goes after its guest shut down;
- everything else (a VM gone, a Network or host changed, a resync) calls `changed`; one
  task converges when the plan differs from the last one converged (or that one failed).

An agent that restarts converges only after listing the VMs, Networks and hosts, so the
plan equals what the driver observes and nothing under running guests changes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from pydantic import ValidationError

from kubevisor.agent.vms import BoundVms, key_of
from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.network import Network as NetworkObject
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core import status
from kubevisor.core.domain.host import Nic
from kubevisor.core.network import hostinputs, hostplan
from kubevisor.core.network.hostinputs import HostSide
from kubevisor.core.network.hostplan import HostPlan, Problem
from kubevisor.drivers.base import RetryableError
from kubevisor.drivers.hostnet.base import Converged, HostNetwork
from kubevisor.kube.client import Kube, Object
from kubevisor.kube.errors import Gone, is_transient, retrying

log = logging.getLogger("kubevisor.agent.network")

RETRY_INTERVAL = 5.0
"""Seconds before a converge that failed is tried again."""


class NetworkNotReady(RetryableError):
    """An interface of the VM is not realised on this host (yet): the VM waits."""

    reason = status.NETWORK_NOT_READY


class HostNetworking:
    def __init__(
        self,
        *,
        side: HostSide,
        kube: Kube,
        driver: HostNetwork | None,
        vms: BoundVms,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        self.side = side
        self._kube = kube
        self.driver = driver
        self._vms = vms
        self._retry_interval = retry_interval
        self._networks: dict[str, Object] = {}
        """Network objects by namespace/name."""
        self._hosts: dict[str, Object] = {}
        self._versions: dict[str, str] = {}
        self._incoming: dict[str, VirtualMachine] = {}
        """VMs migrating here (not bound yet), by uid."""
        self._seen: dict[str, VirtualMachine] = {}
        """The VMs of the last plan, by uid: a VM that left stays until its domain is gone."""
        self._lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._last: HostPlan | None = None
        """The plan last converged without failures; None: converge at the next chance."""
        self.problems: tuple[Problem, ...] = ()
        """Why networks or interfaces of the last plan are not realised here."""

    # -- following the API ---------------------------------------------------------------

    async def load(self) -> None:
        """List the Networks and hosts (before the first converge)."""
        for plural in ("networks", "hosts"):
            await self._relist(plural)

    async def _relist(self, plural: str) -> None:
        lister = self._kube.list_networks if plural == "networks" else self._kube.list_hosts_at
        items, version = await retrying(f"listing {plural}", lister)
        objects = {_name(obj): obj for obj in items}
        if plural == "networks":
            self._networks = objects
        else:
            self._hosts = objects
        self._versions[plural] = version
        self.changed()

    def tasks(self) -> list[Coroutine[Any, Any, None]]:
        return [
            self._follow("networks", self._kube.watch_networks),
            self._follow("hosts", self._kube.watch_hosts),
            self._converger(),
        ]

    async def _follow(
        self, plural: str, watch: Callable[..., AsyncIterator[tuple[str, Object]]]
    ) -> None:
        while True:
            try:
                async for kind, obj in watch(resource_version=self._versions[plural]):
                    self._versions[plural] = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._store(plural, kind, obj)
            except Gone:
                await self._relist(plural)
            except Exception as error:
                if not is_transient(error):
                    raise
                log.warning("%s watch broke (%s); watching again", plural, error)
                await asyncio.sleep(1.0)

    def _store(self, plural: str, kind: str, obj: Object) -> None:
        store = self._networks if plural == "networks" else self._hosts
        if kind == "DELETED":
            store.pop(_name(obj), None)
        else:
            store[_name(obj)] = obj
        self.changed()

    # -- what the other parts call -------------------------------------------------------

    def changed(self) -> None:
        """Something the plan is made of may have changed: converge soon."""
        self._dirty.set()

    def resync(self) -> None:
        """Converge even if the plan is unchanged (the host may have drifted)."""
        self._last = None
        self._dirty.set()

    def arrived(self, uid: str) -> None:
        """A VM migrating here is bound now, or its migration ended: `BoundVms` decides."""
        if self._incoming.pop(uid, None) is not None:
            self.changed()

    async def attach(self, vm: VirtualMachine, uid: str) -> dict[str, Nic]:
        """Realise the networks of `vm` (bound here, or migrating here) now; where each of
        its interfaces on a Network plugs in. Raises NetworkNotReady naming what is not."""
        if vm.status is None or not vm.status.interfaces:
            return {}
        if self.driver is None:
            raise NetworkNotReady(
                "this host's agent runs without a network data plane (--host-network off): "
                "it takes no VMs on Networks"
            )
        if not self._vms.is_bound(uid):
            self._incoming[uid] = vm
        plan, converged = await self.converge()
        networks = self._known_networks()
        found, problems = hostinputs.interfaces(vm, networks)
        owner = hostinputs.key(str(vm.metadata.get("namespace")), str(vm.metadata.get("name")))
        names = {i.network.name for i in found}
        uids = {i.network.uid for i in found}
        taps = {i.tap for i in found}
        problems += [
            p for p in plan.problems if p.vm == owner or (p.vm is None and p.network in names)
        ]
        problems += [
            Problem(f.change.element.__class__.__name__, "NetworkNotRealised", f.reason, owner)
            for f in converged.failed
            if getattr(f.change.element, "network", None) in uids
            or getattr(f.change.element, "tap", None) in taps
        ]
        if problems:
            raise NetworkNotReady("; ".join(f"{p.network}: {p.message}" for p in problems))
        return hostinputs.nics(vm, networks)

    async def converge(self, *, force: bool = False) -> tuple[HostPlan, Converged]:
        """Make the host hold the current plan (a no-op when it was converged already)."""
        async with self._lock:
            plan = self.plan()
            if self.driver is None or (plan == self._last and not force):
                return plan, Converged()
            result = await self.driver.converge(plan)
            for failure in result.failed:
                log.warning(
                    "network change failed: %s %s: %s",
                    failure.change.action,
                    failure.change.element,
                    failure.reason,
                )
            for applied in result.applied:
                log.info("network: %s %s", applied.action, applied.element)
            self._last = None if result.failed else plan
            if plan.problems != self.problems:
                for problem in plan.problems:
                    log.warning("network %s: %s", problem.network, problem.message)
            self.problems = plan.problems
            return plan, result

    def plan(self) -> HostPlan:
        """The host's desired data plane for the VMs counted here now."""
        networks = self._known_networks()
        interfaces: list[hostplan.Interface] = []
        problems: list[Problem] = []
        for vm in self._counted().values():
            found, bad = hostinputs.interfaces(vm, networks)
            interfaces += found
            problems += bad
        plan = hostplan.desired(interfaces, self._facts())
        return dataclasses.replace(plan, problems=tuple(problems) + plan.problems)

    # -- inside --------------------------------------------------------------------------

    async def _converger(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                _, result = await self.converge()
            except Exception:
                log.exception("converging the host's networks failed")
                result = None
            if result is None or result.failed:
                await asyncio.sleep(self._retry_interval)
                self._dirty.set()

    def _counted(self) -> dict[str, VirtualMachine]:
        """The VMs whose interfaces this host serves: bound or migrating here, and those
        that left but whose domain is still here (as last seen)."""
        counted: dict[str, VirtualMachine] = {}
        for obj in self._vms.objects():
            try:
                counted[obj["metadata"]["uid"]] = VirtualMachine.model_validate(obj)
            except ValidationError:
                log.debug("%s: not readable, its interfaces are left out", key_of(obj))
        known = self._vms.known_uids()
        for uid, vm in self._seen.items():
            if uid in known and uid not in counted:
                counted[uid] = vm
        counted.update({u: vm for u, vm in self._incoming.items() if u not in counted})
        self._seen = counted
        return counted

    def _known_networks(self) -> dict[str, hostplan.Network]:
        known: dict[str, hostplan.Network] = {}
        for name, obj in self._networks.items():
            try:
                network = hostinputs.network(NetworkObject.model_validate(obj))
            except ValidationError:
                log.warning("Network %s: not readable, VMs on it are left out", name)
                continue
            if network is not None:
                known[name] = network
        return known

    def _facts(self) -> hostplan.HostFacts:
        hosts = []
        for name, obj in self._hosts.items():
            try:
                hosts.append(HypervisorHost.model_validate(obj))
            except ValidationError:
                log.warning("HypervisorHost %s: not readable, left out", name)
        networks = []
        for obj in self._networks.values():
            try:
                networks.append(NetworkObject.model_validate(obj))
            except ValidationError:
                continue
        return hostinputs.facts(self.side, hosts=hosts, networks=networks)


def _name(obj: Object) -> str:
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])
