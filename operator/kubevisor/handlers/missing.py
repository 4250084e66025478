"""Hosts that VMs are bound to but that have no HypervisorHost object: deleted for good,
or named by a hand-edited status.

The hosts' kopf timers never fire for a host without its object, so the controller's
tick of any other host also judges these (`check_named`, at most every MISSING_CHECK),
as lost hosts: from their heartbeat if their agent still renews one, else from when the
controller first missed the object (`core.hosts.judge_missing`). Their VMs go Unknown,
then fail over after the grace, as on a host whose heartbeat expired.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from kubevisor.core import hosts as hostjudge
from kubevisor.core.hosts import Heartbeat, Judgement
from kubevisor.handlers.evacuation import Evacuation
from kubevisor.handlers.port import ControllerPort
from kubevisor.kube.client import Object

log = logging.getLogger("kubevisor.controller")

MISSING_CHECK = timedelta(seconds=2)
"""How often the hosts' timers also judge the hosts VMs name that do not exist (each
host's timer fires every 2 s: one of them a round does it)."""


class MissingHosts:
    def __init__(
        self,
        controller: ControllerPort,
        evacuation: Evacuation,
        heartbeats: Mapping[str, Heartbeat],
        *,
        timeout: float | None,
    ) -> None:
        self.c = controller
        self.evacuation = evacuation
        self.heartbeats = heartbeats
        """The controller's heartbeats by host, kept up to date by it."""
        self.timeout = timeout
        self.since: dict[str, datetime] = {}
        """Each missing host, and since when this controller knows it is missing."""
        self.ready: dict[str, bool] = {}
        """Whether each missing host was Ready (its agent alive) at its last check."""
        self.checked: datetime | None = None

    def judgement(self, host: str) -> Judgement | None:
        """The judgement of a missing host (None: not known to be missing)."""
        since = self.since.get(host)
        if since is None:
            return None
        return hostjudge.judge_missing(
            self.heartbeats.get(host),
            name=host,
            missing_since=since,
            now=self.c.clock(),
            timeout=self.timeout,
        )

    def forget(self, host: str) -> None:
        """The host has its object (again), or no VM names it any more."""
        self.since.pop(host, None)
        self.ready.pop(host, None)

    def notice(self, host: str) -> bool:
        """Remember when a VM's host was first missed; True if just now."""
        if self.c.host(host) is not None or host in self.since:
            return False
        self.since[host] = self.c.clock()
        log.warning("VMs are bound to host %s, which has no HypervisorHost", host)
        return True

    async def check(self, host: str) -> None:
        """Judge a host without its object now. Its VMs go Unknown once it is lost and
        fail over after the grace; a host that has VMs no more is forgotten."""
        bound = self.c.bound_to(host)
        if not bound:
            self.forget(host)
            return
        self.notice(host)
        judgement = self.judgement(host)
        if judgement is None:
            return  # it has its object after all: its own timer judges it
        if self.ready.get(host) != judgement.ready:
            self.ready[host] = judgement.ready
            for key, _ in bound:
                await self.c.reconcile_vm(key)
        await self.evacuation.check(host)

    async def check_named(self, vms: Iterable[Object]) -> None:
        """Judge every host some VM's status names that has no HypervisorHost (any more),
        at most every MISSING_CHECK."""
        now = self.c.clock()
        if self.checked is not None and now - self.checked < MISSING_CHECK:
            return
        self.checked = now
        named = {(vm.get("status") or {}).get("host") for vm in vms}
        for host in sorted(h for h in named | set(self.since) if h):
            if self.c.host(host) is None:
                await self.check(host)
