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

Nothing of this is forgotten when the agent stops (`core.watchdog`): with a state
directory, every check writes `heartbeat.json` (and notifies systemd's watchdog when
started under one), the VMs a fence destroyed are kept in `fenced.json`, and an agent that
starts again counts its deadline from the last renewal its predecessor recorded and starts
fenced when the file lists VMs. The watchdog process fences through the same file when
the agent is silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import get_args

from kubevisor.agent import fencing, sdnotify
from kubevisor.api.virtualmachine import RunStrategy
from kubevisor.core import lifecycle, selffence, watchdog
from kubevisor.core.convergence import DomainState
from kubevisor.core.domain import identity
from kubevisor.drivers.base import DomainNotFound, Hypervisor, HypervisorError
from kubevisor.kube.client import Kube, Object

log = logging.getLogger("kubevisor.agent")

CHECK_INTERVAL = 1.0
"""Seconds between checks of the deadline (and, while fenced, of the API server)."""

STOPPED = frozenset({DomainState.SHUTOFF, DomainState.CRASHED})


HEARTBEAT = "heartbeat.json"
FENCE_FILE = "fenced.json"


@dataclass(slots=True)
class Fenced:
    """A VM whose domain a fence destroyed here, and what its event will say."""

    ref: identity.VmRef
    domain: str
    reason: str
    notice: str
    reported: bool = False


class FenceFile:
    """The VMs the fences of this host destroyed (uid -> `Fenced`), in the agent's state
    directory: written by the agent and by the watchdog (under a lock), read by an agent
    that starts, removed when the fence lifts."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FENCE_FILE
        self._lock = state_dir / f"{FENCE_FILE}.lock"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self._lock.parent.mkdir(parents=True, exist_ok=True)
        with self._lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def read(self) -> dict[str, Fenced]:
        try:
            raw = json.loads(self.path.read_text())
            return {
                uid: Fenced(
                    ref=identity.VmRef(**entry["ref"]),
                    domain=entry.get("domain", ""),
                    reason=entry.get("reason", "SelfFenced"),
                    notice=entry.get("notice", ""),
                )
                for uid, entry in raw.items()
            }
        except FileNotFoundError:
            return {}
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            # Written whole or not at all (a rename): this is damage from outside.
            log.error("%s is unreadable, ignoring it: %r", self.path, error)
            return {}

    def write(self, fenced: dict[str, Fenced]) -> None:
        entries = {
            uid: {"ref": asdict(f.ref), "domain": f.domain, "reason": f.reason, "notice": f.notice}
            for uid, f in fenced.items()
        }
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(entries, indent=1))
        partial.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


async def destroy_kubevisor_domains(
    hypervisor: Hypervisor,
) -> list[tuple[str, identity.VmRef, str]]:
    """Destroy every running domain of `hypervisor` that kubevisor made (the operator's
    own are left alone): (uuid, VM, domain name) of each destroyed."""
    destroyed = []
    for info in await hypervisor.list_domains():
        if info.state in STOPPED:
            continue
        try:
            ref = identity.read_metadata(await hypervisor.domain_xml(info.uuid))
            if ref is None:
                continue
            await hypervisor.destroy(info.uuid)
        except DomainNotFound:
            continue
        destroyed.append((info.uuid, ref, info.name))
    return destroyed


def process_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks after boot."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


class SelfFence:
    """Constructed by the `Agent` when self-fencing is on; the heartbeat renews through
    `renew`, the workers wait in `wait_unfenced`, and the agent runs `run`. With a
    `state_dir` it keeps its heartbeat and fence there (`core.watchdog`)."""

    def __init__(
        self,
        *,
        host: str,
        deadline: float,
        kube: Kube,
        hypervisor: Hypervisor,
        state_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host = host
        self._deadline = deadline
        self._kube = kube
        self._hv = hypervisor
        self._clock = clock
        self._renewed = clock()
        self._fenced: dict[str, Fenced] | None = None
        """uid -> what was destroyed; None: not fenced."""
        self._unfenced = asyncio.Event()
        self._unfenced.set()
        self._file = FenceFile(state_dir) if state_dir is not None else None
        self._heartbeat = state_dir / HEARTBEAT if state_dir is not None else None
        self._boot = boot_id()
        self._pid = os.getpid()
        self._started = process_start_time(self._pid)
        self._carry_over()

    def _carry_over(self) -> None:
        """What a predecessor on this boot left: the deadline counts from its last renewal,
        and what its fence (or the watchdog's) destroyed holds this one."""
        if self._heartbeat is None or self._file is None:
            return
        with contextlib.suppress(OSError, ValueError):
            before = watchdog.parse(self._heartbeat.read_text())
            if before.boot == self._boot:
                self._renewed = min(self._renewed, before.renewed)
        self._adopt()

    def _adopt(self) -> None:
        """Take in the fence file: VMs that the watchdog, or this agent before a restart,
        fenced, and that this one has not."""
        if self._file is None:
            return
        with self._file.locked():
            recorded = self._file.read()
        news = {uid: f for uid, f in recorded.items() if uid not in (self._fenced or {})}
        if not news:
            return
        if self._fenced is None:
            log.error(
                "host %s was fenced while this agent did not run: %d VM(s) stay down until "
                "they are bound elsewhere",
                self._host,
                len(news),
            )
            self._fenced = {}
            self._unfenced.clear()
        self._fenced.update(news)

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
        """Started by the agent once connected to its hypervisor, before it lists its VMs:
        an agent that starts cut off still fences in time."""
        while True:
            self.beat()
            await asyncio.sleep(CHECK_INTERVAL)
            try:
                await self.check()
            except HypervisorError as error:
                log.error("self-fencing: libvirt failed, trying again: %s", error)

    def beat(self) -> None:
        """Tell the watchdog (and systemd's, if any) that the guard runs."""
        sdnotify.notify("WATCHDOG=1")
        if self._heartbeat is None:
            return
        beat = watchdog.Heartbeat(
            pid=self._pid,
            started=self._started,
            boot=self._boot,
            renewed=self._renewed,
            deadline=self._deadline,
            beat=self._clock(),
        )
        partial = self._heartbeat.with_suffix(".partial")
        try:
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(beat.dumps())
            partial.replace(self._heartbeat)
        except OSError as error:
            log.error("could not write the heartbeat %s: %s", self._heartbeat, error)

    async def check(self) -> None:
        """Fence when the deadline passed; while fenced, keep the guests down and see
        whether the fence may be lifted."""
        self._adopt()
        now = self._clock()
        if self._fenced is None:
            if not selffence.due(renewed=self._renewed, now=now, deadline=self._deadline):
                return
            self._fenced = {}
            self._unfenced.clear()
            log.error(
                "%s; destroying its kubevisor domains",
                selffence.notice(host=self._host, silent_for=now - self._renewed),
            )
        await self._destroy_all(selffence.notice(host=self._host, silent_for=now - self._renewed))
        await self._try_lift()

    async def _destroy_all(self, notice: str) -> None:
        assert self._fenced is not None
        destroyed = await destroy_kubevisor_domains(self._hv)
        for uuid, ref, domain in destroyed:
            log.error(
                "self-fenced: destroyed domain %s of VM %s/%s", domain, ref.namespace, ref.name
            )
            self._fenced.setdefault(
                uuid, Fenced(ref=ref, domain=domain, reason="SelfFenced", notice=notice)
            )
        if destroyed and self._file is not None:
            with self._file.locked():
                self._file.write({**self._file.read(), **self._fenced})

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
        if self._file is not None:
            with self._file.locked():
                self._file.remove()
        self._fenced = None
        self._renewed = self._clock()  # the next renewal is one heartbeat away
        self._unfenced.set()

    async def _released(self, uid: str, fenced: Fenced) -> bool:
        ref = fenced.ref
        live = await self._kube.get_vm(ref.namespace, ref.name)
        if not fenced.reported:
            await fencing.warn(self._kube, ref, reason=fenced.reason, message=fenced.notice)
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
