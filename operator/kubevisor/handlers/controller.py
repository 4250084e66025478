"""The controller's state and reactions: placement, binding, host judgement, deletion.

kopf delivers watch events of VirtualMachines, HypervisorHosts and heartbeat Leases
(handlers/operator.py); this object keeps the placement state incrementally up to date
from them and reacts. Decisions come from `core` (placement, status, hosts); this module
only feeds them and writes their results:

- an unbound VM that should run is placed against a state that already holds every
  earlier claim (decide and claim under one lock, so a burst never double-books), then
  bound: status (host, placement, Scheduled) first, then the `kubevisor.io/host` label and
  the finalizer — the agent starts only once the label is there, so it always sees the
  placement it must render;
- a VM that fits nowhere is Unschedulable with the engine's explanation, and is tried
  again whenever something changes that could let it fit (a host added, changed, Ready
  again, or a claim released) — event-driven, no polling;
- deleting a bound VM waits for its agent to remove the domain (status.created false),
  or for its host to be lost, then releases the claim and the finalizer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError
from typing_extensions import Unpack

from kubevisor import metrics
from kubevisor.api import objects, schema
from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.api.wire import HOST_LABEL, SYSTEM_NAMESPACE, VM_FINALIZER
from kubevisor.core import conditions, flavors, lifecycle, powerfence, quota, selffence
from kubevisor.core import hosts as hostjudge
from kubevisor.core import status as vmstatus
from kubevisor.core.flavors import FlavorKey, Refusal
from kubevisor.core.hosts import Heartbeat, Judgement
from kubevisor.core.migration import Limits
from kubevisor.core.placement import inputs, scheduler
from kubevisor.core.placement.capacity import AllocationRatios
from kubevisor.core.placement.model import HostSnapshot
from kubevisor.core.placement.scheduler import Decision
from kubevisor.core.placement.state import PlacementState
from kubevisor.core.placement.weighers import Multipliers
from kubevisor.drivers import power
from kubevisor.handlers import hoststatus
from kubevisor.handlers.evacuation import Evacuation
from kubevisor.handlers.flavors import Flavors
from kubevisor.handlers.migrations import Migrations
from kubevisor.handlers.missing import MissingHosts
from kubevisor.handlers.namespaces import Namespaces
from kubevisor.handlers.networks import Networks, Unplaced
from kubevisor.handlers.powerfencing import Connect, PowerFencing
from kubevisor.handlers.quotas import Quotas
from kubevisor.handlers.resizes import Resizes
from kubevisor.handlers.vmcache import VmCache
from kubevisor.handlers.vmwrites import StatusNote, VmWrites
from kubevisor.kube.client import Kube, Object
from kubevisor.kube.errors import is_transient

log = logging.getLogger("kubevisor.controller")

AGAIN = 5
"""Passes one `reconcile_vm` call makes at most when asked again meanwhile; more are
left to the next resync, so a VM whose every pass asks for another cannot spin."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Read once at start-up and passed down as a value."""

    lease_namespace: str = SYSTEM_NAMESPACE
    heartbeat_timeout: float | None = None
    """Seconds without a Lease renewal before a host is NotReady (default: the Lease's own)."""
    ratios: AllocationRatios = dataclasses.field(default_factory=AllocationRatios)
    options: scheduler.Options = dataclasses.field(default_factory=scheduler.Options)
    multipliers: Multipliers = dataclasses.field(default_factory=Multipliers)
    migration_limits: Limits = dataclasses.field(default_factory=Limits)
    failover_grace: float | None = 120.0
    """Seconds a host may be NotReady before its VMs are started elsewhere (None: never)."""
    resync_interval: float = 30.0
    """Seconds between two resyncs (`Controller.resync`): the longest a lost watch event
    can delay a VM."""
    fence_margin: float = selffence.DEFAULT_MARGIN
    """Seconds added to an agent's self-fence deadline before its VMs may start elsewhere."""
    power_fence_timeout: float = powerfence.DEFAULT_TIMEOUT
    """Seconds one power fence through a host's BMC may take until power Off is confirmed."""


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Controller:
    def __init__(
        self,
        *,
        settings: Settings,
        kube: Kube,
        clock: Callable[[], datetime] = now_utc,
        connect_bmc: Connect = power.connect,
    ) -> None:
        """`connect_bmc`: builds a host's BMC for power fencing (tests hand in a fake)."""
        self.settings = settings
        self.kube = kube
        self.clock = clock
        self.state = PlacementState(defaults=settings.ratios, multipliers=settings.multipliers)
        self.vms = VmCache()
        self.hosts: dict[str, Object] = {}
        self.heartbeats: dict[str, Heartbeat] = {}
        self.judgements: dict[str, Judgement] = {}
        self.pending: dict[str, None] = {}
        """Keys of VMs waiting for a host, oldest first (a dict keeps insertion order)."""
        self.explained: dict[str, str] = {}
        """The last FailedScheduling message per VM, so an unchanged one is not re-posted."""
        self.lock = asyncio.Lock()
        self.unreadable_hosts: dict[str, str] = {}
        self.reconciling: dict[str, bool] = {}
        """VMs being reconciled now, and whether they were asked for again meanwhile."""
        self.resynced: datetime | None = None
        """Why each host placement leaves out could not be read (`snapshot`)."""
        self.writes = VmWrites(kube=kube, cache=self, clock=clock)
        self.migrations = Migrations(self, kube, settings.migration_limits)
        self.networks = Networks(self, kube)
        self.quotas = Quotas(self, kube)
        self.namespaces = Namespaces(self)
        grace, margin = settings.failover_grace, settings.fence_margin
        self.power = PowerFencing(
            self,
            kube,
            namespace=settings.lease_namespace,
            timeout=settings.power_fence_timeout,
            connect=connect_bmc,
        )
        self.evacuation = Evacuation(
            self, kube, self.migrations, grace=grace, margin=margin, power=self.power
        )
        self.resizes = Resizes(self)
        self.flavors = Flavors(self, kube)
        self.missing = MissingHosts(
            self, self.evacuation, self.heartbeats, timeout=settings.heartbeat_timeout
        )

    # -- start-up ---------------------------------------------------------------------

    # -- hosts ------------------------------------------------------------------------

    async def on_host(self, event: str | None, obj: Object) -> None:
        name = obj["metadata"]["name"]
        if event == "DELETED":
            hoststatus.forget_conditions(self.hosts.pop(name, obj))
            self.judgements.pop(name, None)
            self.unreadable_hosts.pop(name, None)
            if name in self.state:
                self.state.remove_host(name)
            await self.missing.check(name)
            return
        self.missing.forget(name)
        before = self.state.host(name) if name in self.state else None
        if not objects.stale(obj, self.hosts.get(name)):
            self.hosts[name] = obj
        self.judgements.setdefault(name, self.judge_heartbeat(name))
        self._add_host_snapshot(name)
        for key, _ in self.bound_to(name):
            self._ensure_claim(key)
        after = self.state.host(name) if name in self.state else None
        if after is not None and after != before:
            # New capacity, ratios, labels, cordon or topology: a waiting VM may fit now.
            await self.retry_pending()

    def _add_host_snapshot(self, name: str) -> None:
        snapshot = self.snapshot(name)
        if snapshot is not None:
            self.state.add_host(snapshot)
        elif name in self.state:
            # It was readable before this change: placement must not use what it was.
            self.state.remove_host(name)

    def snapshot(self, name: str) -> HostSnapshot | None:
        """The host as placement sees it, Ready as its heartbeat says (None: unreadable,
        and `unreadable_hosts` says why: its status says so at its next check)."""
        try:
            host = HypervisorHost.model_validate(self.hosts[name])
            snapshot = inputs.host_snapshot(host)
        except Exception as error:
            # Whatever a stored host holds, it fails alone: never the controller.
            reason = f"the controller cannot read this host: {objects.unreadable(error)}"
            if self.unreadable_hosts.get(name) != reason:
                log.error("host %s: %s", name, reason)
            self.unreadable_hosts[name] = reason
            return None
        self.unreadable_hosts.pop(name, None)
        judgement = self.judgements.get(name)
        ready = judgement is not None and judgement.ready
        return dataclasses.replace(snapshot, ready=ready)

    # -- what the helpers read (handlers.port.ControllerPort) ------------------------------

    def vm(self, key: str) -> Object | None:
        return self.vms.get(key)

    def bound_to(self, host: str) -> list[tuple[str, Object]]:
        return [
            (key, obj)
            for key, obj in self.vms.items()
            if (obj.get("status") or {}).get("host") == host
        ]

    def vms_naming(self, flavor: FlavorKey) -> list[tuple[str, Object]]:
        return [(key, obj) for key, obj in self.vms.items() if flavors.key(obj) == flavor]

    def host(self, name: str) -> Object | None:
        return self.hosts.get(name)

    def judgement(self, host: str) -> Judgement | None:
        if host in self.hosts:
            return self.judgements.get(host)
        return self.missing.judgement(host)

    def hypervisor_type(self, host: str) -> str:
        return self.state.host(host).hypervisor_type if host in self.state else ""

    def remember_lease(self, obj: Object) -> None:
        """A heartbeat seen; the host's next check (kopf's per-host timer) judges it."""
        spec = obj.get("spec") or {}
        renewed = spec.get("renewTime")
        if not renewed:
            return
        when = schema.parse_timestamp(str(renewed))
        self.heartbeats[obj["metadata"]["name"]] = Heartbeat(
            renewed=when,
            duration=float(spec.get("leaseDurationSeconds") or hostjudge.DEFAULT_LEASE_DURATION),
        )

    def judge_heartbeat(self, name: str) -> Judgement:
        return hostjudge.judge(
            self.heartbeats.get(name), now=self.clock(), timeout=self.settings.heartbeat_timeout
        )

    async def check_host(self, name: str) -> None:
        """Judge a host's heartbeat now; react when Ready flips; publish the host status."""
        if name not in self.hosts:
            return
        judgement = self.judge_heartbeat(name)
        before = self.judgements.get(name)
        self.judgements[name] = judgement
        ready = Counter(j.ready for j in self.judgements.values())
        metrics.HOSTS_READY.labels("true").set(ready[True])
        metrics.HOSTS_READY.labels("false").set(ready[False])
        if before is None or before.ready != judgement.ready:
            log.info(
                "host %s is %s: %s",
                name,
                "Ready" if judgement.ready else "NotReady",
                judgement.message,
            )
            self._add_host_snapshot(name)
            for key, _ in self.bound_to(name):
                await self.reconcile_vm(key)
            if judgement.ready:
                await self.retry_pending()
            await self.migrations.on_host_change(name)
        drain = await self.evacuation.check(name)
        await self._write_host_status(name, judgement, drain)
        await self.missing.check_named(list(self.vms.values()))

    async def _write_host_status(
        self, name: str, judgement: Judgement, drain: dict[str, object] | None
    ) -> None:
        reply = await hoststatus.publish(
            self.kube,
            self.hosts[name],
            state=self.state,
            judgement=judgement,
            drain=drain,
            unreadable=self.unreadable_hosts.get(name),
            now=self.clock(),
            failover=self.evacuation.notes(name, judgement),
        )
        if reply is not None:
            self.hosts[name] = reply
        hoststatus.count_conditions(self.hosts[name])

    # -- virtual machines ------------------------------------------------------------------

    async def on_vm(self, event: str | None, obj: Object) -> None:
        key = objects.key(obj["metadata"])
        if event == "DELETED":
            self.vms.pop(key, None)
            self.writes.labelled.pop(key, None)
            self._count_phases()
            self.pending.pop(key, None)
            self.explained.pop(key, None)
            self.evacuation.forget(key)
            self.resizes.forget(key)
            self.flavors.forget(key)
            await self.networks.on_vm(key)
            if self.state.release(key) is not None:
                await self.quotas.publish(quota.namespace_of(key))
                await self.retry_pending()
            return
        self.remember_vm(obj)
        self._count_phases()
        with metrics.timed(metrics.RECONCILE_DURATION, "virtualmachine"):
            await self.reconcile_vm(key)
        await self.networks.on_vm(key)

    def remember_vm(self, obj: Object) -> None:
        """Cache the VM unless the cache holds a newer version: a watch event can lag
        behind the reply to a write this controller made since, and acting on the older
        one would undo that write (re-evict, re-claim a released host)."""
        key = objects.key(obj["metadata"])
        if not objects.stale(obj, self.vms.get(key)):
            self.vms[key] = obj

    def _count_phases(self) -> None:
        for phase in lifecycle.PHASES:
            metrics.VMS.labels(phase).set(self.vms.phases.get(phase, 0))

    async def retry_pending(self) -> None:
        for key in list(self.pending):
            await self.reconcile_vm(key)
        await self.resizes.retry()

    async def reconcile_vm(self, key: str) -> None:
        """Bring one VM forward from what the cache says of it now. It never raises:
        callers loop over many VMs (pending ones, a host's), and one VM's failure must not
        stop the others' (the resync tries it again).

        One VM is reconciled by one task at a time: asked again meanwhile (by another
        handler, or from inside its own reconcile, as an unbind does), it runs again
        right after, from the cache as it is then. So a decision about a VM is never
        made on a view another decision about it is changing (an Unschedulable write
        cannot drop a bind made meanwhile), and nothing waits for another VM's turn."""
        if key in self.reconciling:
            self.reconciling[key] = True
            return
        self.reconciling[key] = False
        try:
            for _ in range(AGAIN):
                try:
                    await self._reconcile_vm(key)
                except Exception as error:
                    metrics.RECONCILE_ERRORS.labels("virtualmachine").inc()
                    if is_transient(error):
                        log.warning("%s: reconcile failed (%s); trying again later", key, error)
                    else:
                        log.exception("%s: reconcile failed; trying again later", key)
                if not self.reconciling[key]:
                    break
                self.reconciling[key] = False
        finally:
            del self.reconciling[key]

    async def _reconcile_vm(self, key: str) -> None:
        obj = self.vms.get(key)
        if obj is None:
            return
        meta = obj["metadata"]
        host = (obj.get("status") or {}).get("host") or None
        if meta.get("deletionTimestamp"):
            # Read raw: a VM nobody can parse can still be deleted.
            await self._finish_deletion(key, obj, host)
            return
        resolved = await self.flavors.resolve(key, obj)
        if isinstance(resolved, Refusal):
            await self._refuse_vm(key, obj, resolved.message, reason=resolved.reason)
            return
        obj = resolved
        try:
            vm = VirtualMachine.model_validate(obj)
        except ValidationError as invalid:
            await self._unreadable_vm(key, obj, invalid)
            return
        if host is not None:
            await self._reconcile_bound(key, obj, vm, host)
            return
        if vm.spec.run_strategy == "Halted":
            self.pending.pop(key, None)
            await self.write_vm_status(obj, binding=None)
            return
        await self._place(key, obj, vm)

    async def _unreadable_vm(self, key: str, obj: Object, error: Exception) -> None:
        """A VM the API server stored but the controller cannot read or place: Failed
        with conditions saying why, on it alone. A bound one keeps its binding and claim;
        its agent reports it (`status.invalid_spec_status`)."""
        reason = f"the controller cannot read this VM: {objects.unreadable(error)}"
        await self._refuse_vm(key, obj, reason)

    async def _refuse_vm(
        self, key: str, obj: Object, message: str, *, reason: str = vmstatus.INVALID_SPEC
    ) -> None:
        """Fail a VM the controller will not place, with `reason` and `message` in its
        conditions (an unbound one's; a bound one's agent reports on it) and the log."""
        self.pending.pop(key, None)
        if self.explained.get(key) != message:
            self.explained[key] = message
            log.error("%s: %s", key, message)
        current = obj.get("status") or {}
        if current.get("host"):
            return
        wanted = vmstatus.invalid_spec_status(
            message,
            generation=int(obj["metadata"].get("generation") or 0),
            previous=conditions.previous(current),
            now=self.clock(),
            unbound=True,
            reason=reason,
        )
        if vmstatus.differs(current, wanted):
            meta = obj["metadata"]
            self.remember_vm(
                await self.kube.apply_vm_status(meta["namespace"], meta["name"], wanted)
            )

    async def _finish_deletion(self, key: str, obj: Object, host: str | None) -> None:
        finalizers = list(obj["metadata"].get("finalizers") or [])
        if VM_FINALIZER not in finalizers:
            return
        created = bool((obj.get("status") or {}).get("created"))
        if host is not None:
            self.missing.notice(host)
        judgement = self.judgement(host) if host else None
        lost = judgement is not None and not judgement.ready
        if host is not None and created and not lost:
            return  # the agent is still shutting the domain down
        if host is not None and created and lost:
            log.warning("%s: releasing it although host %s is lost", key, host)
        self.state.release(key)
        self.pending.pop(key, None)
        await self.networks.release(key, obj)
        finalizers.remove(VM_FINALIZER)
        meta = obj["metadata"]
        await self.kube.patch_vm(
            meta["namespace"], meta["name"], {"metadata": {"finalizers": finalizers or None}}
        )
        await self.quotas.publish(meta["namespace"])
        await self.retry_pending()

    async def _reconcile_bound(self, key: str, obj: Object, vm: VirtualMachine, host: str) -> None:
        if await self.evacuation.finish_eviction(key, obj):
            return
        self.pending.pop(key, None)
        self._ensure_claim(key)
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        unlabelled = labels.get(HOST_LABEL) != host or VM_FINALIZER not in (
            meta.get("finalizers") or []
        )
        # The watch may still deliver the status write of a bind before its label patch.
        if not unlabelled:
            self.writes.labelled.pop(key, None)
        elif self.writes.labelled.get(key) != host:
            await self.label(obj, host)
        self.missing.notice(host)
        judgement = self.judgement(host)
        if judgement is not None and not judgement.ready:
            placement = vm.status.placement if vm.status else None
            await self.write_vm_status(
                obj,
                binding=vmstatus.Binding(host=host, placement=placement),
                host_lost=f"host {host} is not Ready: {judgement.message}",
            )
        elif host in self.hosts:
            await self.resizes.check(key, obj, vm, host)
            await self.quotas.publish(meta["namespace"])  # a resize counts the new size

    def _ensure_claim(self, key: str) -> None:
        obj = self.vms.get(key)
        if obj is None or key in self.state.claims():
            return
        host = (obj.get("status") or {}).get("host")
        if not host or host not in self.state:
            return  # nothing to hold (yet): no host, or one not known (yet)
        try:
            claim = inputs.bound_claim(self.state, VirtualMachine.model_validate(obj))
            if claim is not None:
                self.state.claim(claim)
        except Exception as error:
            # ClaimConflict, or a VM no model refused but placement cannot evaluate.
            log.error("%s: cannot rebuild its claim on %s: %s", key, host, error)

    async def _place(self, key: str, obj: Object, vm: VirtualMachine) -> None:
        async with self.lock:
            held = self.state.claims().get(key)
            if held is not None:
                # No other reconcile of this VM runs (`reconcile_vm`) and its bind writes
                # update the cache at once, so a claim of a VM that names no host is left
                # over (re-claimed from a view that was out of date): holding it would
                # keep the VM from ever being placed.
                log.warning(
                    "%s: held a claim on %s without a binding; placing it again", key, held.host
                )
                self.state.release(key)
            try:
                with metrics.timed(metrics.PLACEMENT_DURATION):
                    decision = self._over_quota(key, vm) or self.networks.place(
                        key, vm, self.settings.options
                    )
            except Exception as error:
                # A value the model let through that placement cannot evaluate.
                failed: Exception | None = error
            else:
                failed = None
        if failed is not None:
            await self._unreadable_vm(key, obj, failed)
            return
        if not isinstance(decision, Decision):
            metrics.PLACEMENT_DECISIONS.labels("unschedulable", decision.filter).inc()
            message, why = decision.message, decision.reason
            self.pending[key] = None
            await self.write_vm_status(obj, binding=None, unschedulable=message, why=why)
            if self.explained.get(key) != message:
                self.explained[key] = message
                await self.event(obj, "Warning", "FailedScheduling", message)
            return
        metrics.PLACEMENT_DECISIONS.labels("placed", "none").inc()
        self.pending.pop(key, None)
        self.explained.pop(key, None)
        placement = inputs.placement_status(decision.numa, size=inputs.claimed_size(vm))
        binding = vmstatus.Binding(host=decision.host, placement=placement)
        try:
            obj = await self.networks.record(key, obj)
            await self.write_vm_status(obj, binding=binding)
            await self.label(obj, decision.host)
        except Exception:
            # The bind did not land: give the capacity back so the retry starts clean.
            self.state.release(key)
            raise
        log.info("%s: placed on %s (%d hosts considered)", key, decision.host, decision.considered)
        await self.quotas.publish(quota.namespace_of(key))
        await self.event(obj, "Normal", "Scheduled", decision.message)
        await self.evacuation.placed(key, decision.host)

    def _over_quota(self, key: str, vm: VirtualMachine) -> Unplaced | None:
        """Why the VM's namespace cannot take it now, under the placement lock. A VM being
        started elsewhere after its host was lost is not checked: it held its quota
        there, and a full namespace must not keep it down (as a live migration is never
        checked)."""
        if key in self.evacuation.failovers:
            return None
        return self.quotas.refusal(key, vm)

    # -- writes (handlers.vmwrites) ------------------------------------------------------

    async def label(self, obj: Object, host: str) -> Object:
        return await self.writes.label(obj, host)

    async def unlabel(self, obj: Object) -> Object:
        return await self.writes.unlabel(obj)

    async def write_vm_status(
        self, obj: Object, *, binding: vmstatus.Binding | None, **note: Unpack[StatusNote]
    ) -> Object:
        return await self.writes.write_vm_status(obj, binding=binding, **note)

    async def event(self, obj: Object, type_: str, reason: str, message: str) -> None:
        await self.writes.event(obj, type_, reason, message)
