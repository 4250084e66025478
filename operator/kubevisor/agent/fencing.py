"""Fencing: no domain runs here for a VM that is not bound to this host.

Before it heartbeats for the first time, and on every resync and reconnection, the agent
destroys and removes every domain carrying kubevisor metadata whose VM no longer exists,
has another uid, or is bound elsewhere, so a host that comes back after being declared lost
never runs a VM twice. The API server has the last word: a domain no watched VM owns is
fenced only once a GET of its VM confirms it (the watch may lag a migration's binding), and
a domain migrating here is never fenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Protocol

from kubevisor import metrics
from kubevisor.agent.reconciler import remove_domain
from kubevisor.agent.vmfiles import VmFiles
from kubevisor.agent.vms import BoundVms
from kubevisor.api.wire import AGENT
from kubevisor.core.convergence import DomainState
from kubevisor.core.domain import identity
from kubevisor.drivers.base import DomainNotFound, Hypervisor, HypervisorError
from kubevisor.kube.client import Kube

log = logging.getLogger("kubevisor.agent")


async def warn(kube: Kube, ref: identity.VmRef, *, reason: str, message: str) -> None:
    """Record a Warning event on the VM a domain here belongs to (fencing, self-fencing)."""
    await kube.event(
        involved={
            "kind": "VirtualMachine",
            "metadata": {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid},
        },
        type_="Warning",
        reason=reason,
        message=message,
        component=AGENT,
    )


class Incoming(Protocol):
    """The domains migrating here, which are nobody's stray (the Migrator)."""

    def is_incoming(self, uid: str) -> bool: ...

    def incoming_uids(self) -> frozenset[str]: ...


class Fencer:
    def __init__(
        self,
        *,
        host: str,
        kube: Kube,
        hypervisor: Hypervisor,
        vms: BoundVms,
        files: VmFiles,
        incoming: Incoming,
    ) -> None:
        self._host = host
        self._kube = kube
        self._hv = hypervisor
        self._vms = vms
        self._files = files
        self._incoming = incoming
        self._running: asyncio.Task[None] | None = None

    async def fence(self) -> None:
        """Destroy and remove every kubevisor domain that is not bound to this host."""
        with metrics.timed(metrics.LIBVIRT_CALL_DURATION, "list"):
            domains = await self._hv.list_domains()
        states = Counter(info.state.value for info in domains)
        for state in DomainState:
            metrics.DOMAINS.labels(state.value).set(states.get(state.value, 0))
        for info in domains:
            if self._vms.is_bound(info.uuid):
                continue
            try:
                ref = identity.read_metadata(await self._hv.domain_xml(info.uuid))
            except DomainNotFound:
                continue
            if ref is None:
                continue  # not ours: leave the operator's own domains alone
            if await self._stray(info.uuid, ref):
                await self._fence_one(info.name, info.uuid, ref)
        # Files of VMs whose domains are gone (e.g. removed while the agent was down).
        for uid in (
            self._files.known_uids() - self._vms.known_uids() - self._incoming.incoming_uids()
        ):
            self._files.remove(uid)

    def fence_soon(self) -> None:
        """Fence in the background, unless a fencing runs already: a domain no VM of this
        host owns appeared or changed."""
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._fence_logged())

    async def remove_stray(self, uid: str) -> None:
        """Destroy and remove a domain and its files that nothing binds here."""
        with contextlib.suppress(DomainNotFound):
            await self._hv.destroy(uid)
        await remove_domain(self._hv, self._files, uid)

    async def _fence_logged(self) -> None:
        try:
            await self.fence()
        except HypervisorError as error:
            log.warning("fencing postponed: %s", error)

    async def _fence_one(self, name: str, uid: str, ref: identity.VmRef) -> None:
        log.warning(
            "fencing domain %s of VM %s/%s: not bound to host %s",
            name,
            ref.namespace,
            ref.name,
            self._host,
        )
        await remove_domain(self._hv, self._files, uid)
        with contextlib.suppress(Exception):
            await warn(
                self._kube,
                ref,
                reason="Fenced",
                message=f"host {self._host} destroyed its domain {name}: "
                "the VM is not bound to this host",
            )

    async def _stray(self, uid: str, ref: identity.VmRef) -> bool:
        """Whether a domain no watched VM owns is really nobody's here, asked of the API
        server itself: this agent's watches may lag (a VM migrated here is bound by a
        status write and a label patch this agent may not have seen yet)."""
        if self._incoming.is_incoming(uid):
            return False
        try:
            live = await self._kube.get_vm(ref.namespace, ref.name)
        except Exception as error:
            log.warning("not fencing %s now: cannot read its VM: %s", uid, error)
            return False
        if live is None or live["metadata"].get("uid") != uid:
            return True
        return (live.get("status") or {}).get("host") != self._host
