"""Self-fencing: a host cut off from the API server stops its own guests in time.

The heartbeat (`registration.HostRegistration`) tells `SelfFence` each Lease renewal that
succeeded. `run` checks every second: once `settings.self_fence_after` seconds passed
since the renewTime of the last one (`core.selffence.due`), it destroys every running
kubevisor domain here and logs it, before the controller may start those VMs elsewhere
(`core.selffence.failover_delay`). From then on the host is fenced:

- the Lease is not renewed, so the controller keeps the host lost and fails its VMs over;
- the agent's workers reconcile nothing (`wait_unfenced`), so nothing it fenced restarts;
- every check destroys any kubevisor domain running again (an incoming migration).

Once it reaches the API server again it records an event on each VM it fenced, and it
lifts the fence when none of them holds it any more (`core.selffence.holds`): each is
gone, bound elsewhere, or not one the controller fails over. Then the heartbeat resumes and
the `Fencer` removes the domains of the VMs that are bound elsewhere now; nothing fenced is
adopted again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import get_args

from kubevisor.agent import fencing
from kubevisor.api.virtualmachine import RunStrategy
from kubevisor.core import lifecycle, selffence
from kubevisor.core.convergence import DomainState
from kubevisor.core.domain import identity
from kubevisor.drivers.base import DomainNotFound, Hypervisor, HypervisorError
from kubevisor.kube.client import Kube, Object

log = logging.getLogger("kubevisor.agent")

CHECK_INTERVAL = 1.0
"""Seconds between checks of the deadline (and, while fenced, of the API server)."""

STOPPED = frozenset({DomainState.SHUTOFF, DomainState.CRASHED})


@dataclass(slots=True)
class _Fenced:
    ref: identity.VmRef
    domain: str
    reported: bool = False


class SelfFence:
    """Constructed by the `Agent` when self-fencing is on; the heartbeat renews through
    `renew`, the workers wait in `wait_unfenced`, and the agent runs `run`."""

    def __init__(
        self,
        *,
        host: str,
        deadline: float,
        kube: Kube,
        hypervisor: Hypervisor,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host = host
        self._deadline = deadline
        self._kube = kube
        self._hv = hypervisor
        self._clock = clock
        self._renewed = clock()
        self._silent_for = 0.0
        self._fenced: dict[str, _Fenced] | None = None
        """uid -> what was destroyed; None: not fenced."""
        self._unfenced = asyncio.Event()
        self._unfenced.set()

    @property
    def fenced(self) -> bool:
        return self._fenced is not None

    def fenced_uids(self) -> frozenset[str]:
        return frozenset(self._fenced or ())

    async def renew(self, renew: Callable[[], Awaitable[None]]) -> None:
        """Renew the Lease through `renew` (the heartbeat's), unless fenced: the controller
        would then take the host for alive and never start its fenced VMs elsewhere. The
        deadline counts from the start of the last renewal that succeeded, as the renewTime
        it wrote, which the controller counts from, is no later."""
        if self._fenced is not None:
            return
        sent = self._clock()
        await renew()
        self._renewed = max(self._renewed, sent)

    async def wait_unfenced(self) -> None:
        await self._unfenced.wait()

    async def run(self) -> None:
        """Started by the agent right after its first renewal."""
        self._renewed = self._clock()
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            try:
                await self.check()
            except HypervisorError as error:
                log.error("self-fencing: libvirt failed, trying again: %s", error)

    async def check(self) -> None:
        """Fence when the deadline passed; while fenced, keep the guests down and see
        whether the fence may be lifted."""
        now = self._clock()
        if self._fenced is None:
            if not selffence.due(renewed=self._renewed, now=now, deadline=self._deadline):
                return
            self._silent_for = now - self._renewed
            self._fenced = {}
            self._unfenced.clear()
            log.error(
                "%s; destroying its kubevisor domains",
                selffence.notice(host=self._host, silent_for=self._silent_for),
            )
        await self._destroy_all()
        await self._try_lift()

    async def _destroy_all(self) -> None:
        assert self._fenced is not None
        for info in await self._hv.list_domains():
            if info.state in STOPPED:
                continue
            try:
                ref = identity.read_metadata(await self._hv.domain_xml(info.uuid))
                if ref is None:
                    continue  # not ours: the operator's own domains are left alone
                await self._hv.destroy(info.uuid)
            except DomainNotFound:
                continue
            log.error(
                "self-fenced: destroyed domain %s of VM %s/%s", info.name, ref.namespace, ref.name
            )
            self._fenced.setdefault(info.uuid, _Fenced(ref=ref, domain=info.name))

    async def _try_lift(self) -> None:
        """Report to the API server once it answers, and lift the fence when no fenced VM
        holds the host any more; a failing API call leaves it for the next check."""
        assert self._fenced is not None
        try:
            await self._kube.get_host(self._host)  # the API server answers at all
            holding = [uid for uid, f in self._fenced.items() if not await self._released(uid, f)]
        except Exception as error:
            log.debug("self-fenced: the API server is still out of reach: %s", error)
            return
        if holding:
            return
        log.warning(
            "host %s: the VMs it fenced are bound elsewhere or not failed over; renewing its "
            "Lease again",
            self._host,
        )
        self._fenced = None
        self._renewed = self._clock()  # the next renewal is one heartbeat away
        self._unfenced.set()

    async def _released(self, uid: str, fenced: _Fenced) -> bool:
        ref = fenced.ref
        live = await self._kube.get_vm(ref.namespace, ref.name)
        if not fenced.reported:
            await fencing.warn(
                self._kube,
                ref,
                reason="SelfFenced",
                message=selffence.notice(host=self._host, silent_for=self._silent_for),
            )
            fenced.reported = True
        return not selffence.holds(_observed(uid, live), host=self._host)


def _observed(uid: str, live: Object | None) -> selffence.Fenced:
    if live is None:
        return selffence.Fenced(uid=uid, live_uid=None, live_host=None, restarts=False)
    strategy = (live.get("spec") or {}).get("runStrategy", "Always")
    # An unknown strategy is held like one that fails over: the safe side.
    restarts = strategy not in get_args(RunStrategy) or lifecycle.restarts_after_host_loss(strategy)
    return selffence.Fenced(
        uid=uid,
        live_uid=live["metadata"].get("uid"),
        live_host=(live.get("status") or {}).get("host"),
        restarts=restarts,
    )
