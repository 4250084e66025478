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
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from kubevisor import metrics
from kubevisor.api import objects, quantity, schema
from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.api.wire import CONTROLLER, HOST_LABEL, SYSTEM_NAMESPACE, VM_FINALIZER
from kubevisor.core import conditions, lifecycle
from kubevisor.core import hosts as hostjudge
from kubevisor.core import status as vmstatus
from kubevisor.core.hosts import Heartbeat, Judgement
from kubevisor.core.migration import Limits
from kubevisor.core.placement import inputs, scheduler
from kubevisor.core.placement.capacity import AllocationRatios
from kubevisor.core.placement.model import HostSnapshot
from kubevisor.core.placement.scheduler import Decision
from kubevisor.core.placement.state import ClaimConflict, PlacementState
from kubevisor.core.placement.weighers import Multipliers
from kubevisor.core.resizing import ResizeNote
from kubevisor.handlers.evacuation import Evacuation
from kubevisor.handlers.migrations import Migrations
from kubevisor.handlers.resizes import Resizes
from kubevisor.kube.client import Kube, Object
from kubevisor.kube.errors import is_transient

log = logging.getLogger("kubevisor.controller")

MISSING_CHECK = timedelta(seconds=2)
"""How often the hosts' timers also judge the hosts VMs name that do not exist (each
host's timer fires every 2 s: one of them a round does it)."""


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


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Controller:
    def __init__(
        self,
        *,
        settings: Settings,
        kube: Kube,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.clock = clock
        self.state = PlacementState(defaults=settings.ratios, multipliers=settings.multipliers)
        self.vms: dict[str, Object] = {}
        self.hosts: dict[str, Object] = {}
        self.heartbeats: dict[str, Heartbeat] = {}
        self.judgements: dict[str, Judgement] = {}
        self.pending: dict[str, None] = {}
        """Keys of VMs waiting for a host, oldest first (a dict keeps insertion order)."""
        self.explained: dict[str, str] = {}
        """The last FailedScheduling message per VM, so an unchanged one is not re-posted."""
        self.lock = asyncio.Lock()
        self.labelled: dict[str, str] = {}
        """Host label this controller patched per VM, until the watch shows the VM gone."""
        self.missing: dict[str, datetime] = {}
        """Hosts that VMs are bound to but that have no HypervisorHost object, and since
        when this controller knows: judged as lost hosts (`core.hosts.judge_missing`)."""
        self.missing_ready: dict[str, bool] = {}
        """Whether each missing host was Ready (its agent alive) at its last check."""
        self.missing_checked: datetime | None = None
        self.migrations = Migrations(self, kube, settings.migration_limits)
        self.evacuation = Evacuation(
            self, kube, self.migrations, failover_grace=settings.failover_grace
        )
        self.resizes = Resizes(self)

    # -- start-up ---------------------------------------------------------------------

    async def load(
        self,
        *,
        hosts: list[Object],
        vms: list[Object],
        leases: list[Object],
        jobs: list[Object] | None = None,
    ) -> None:
        """Build the whole state from a listing, before any event is handled."""
        for lease in leases:
            self.remember_lease(lease)
        for host in hosts:
            name = host["metadata"]["name"]
            self.hosts[name] = host
            self.judgements[name] = self._judge(name)
        readable = []
        for vm in vms:
            key = objects.key(vm["metadata"])
            self.vms[key] = vm
            try:
                readable.append(VirtualMachine.model_validate(vm))
            except ValidationError as invalid:
                log.error("%s cannot be read: %s", key, invalid)
        snapshots = (self._snapshot(name) for name in self.hosts)
        listing = inputs.state_from(
            (snapshot for snapshot in snapshots if snapshot is not None),
            readable,
            ratios=self.settings.ratios,
            multipliers=self.settings.multipliers,
        )
        self.state = listing.state
        for conflict in listing.conflicts:
            claim = conflict.claim
            log.error(
                "%s: cannot rebuild its claim on %s: %s", claim.vm, claim.host, conflict.reason
            )
        self.migrations.load(jobs or [])

    # -- hosts ------------------------------------------------------------------------

    async def on_host(self, event: str | None, obj: Object) -> None:
        name = obj["metadata"]["name"]
        if event == "DELETED":
            self.hosts.pop(name, None)
            self.judgements.pop(name, None)
            if name in self.state:
                self.state.remove_host(name)
            await self._check_missing(name)
            return
        self.missing.pop(name, None)
        self.missing_ready.pop(name, None)
        before = self.state.host(name) if name in self.state else None
        self.hosts[name] = obj
        self.judgements.setdefault(name, self._judge(name))
        self._add_host_snapshot(name)
        for key, _ in self.bound_to(name):
            self._ensure_claim(key)
        after = self.state.host(name) if name in self.state else None
        if after is not None and after != before:
            # New capacity, ratios, labels, cordon or topology: a waiting VM may fit now.
            await self.retry_pending()

    def _add_host_snapshot(self, name: str) -> None:
        snapshot = self._snapshot(name)
        if snapshot is not None:
            self.state.add_host(snapshot)

    def _snapshot(self, name: str) -> HostSnapshot | None:
        """The host as placement sees it, Ready as its heartbeat says (None: unreadable)."""
        try:
            host = HypervisorHost.model_validate(self.hosts[name])
        except ValidationError as invalid:
            log.error("host %s cannot be read: %s", name, invalid)
            return None
        judgement = self.judgements.get(name)
        ready = judgement is not None and judgement.ready
        return dataclasses.replace(inputs.host_snapshot(host), ready=ready)

    # -- what the helpers read (handlers.port.ControllerPort) ------------------------------

    def vm(self, key: str) -> Object | None:
        return self.vms.get(key)

    def bound_to(self, host: str) -> list[tuple[str, Object]]:
        return [
            (key, obj)
            for key, obj in self.vms.items()
            if (obj.get("status") or {}).get("host") == host
        ]

    def host(self, name: str) -> Object | None:
        return self.hosts.get(name)

    def judgement(self, host: str) -> Judgement | None:
        if host in self.hosts:
            return self.judgements.get(host)
        since = self.missing.get(host)
        if since is None:
            return None
        return hostjudge.judge_missing(
            self.heartbeats.get(host),
            name=host,
            missing_since=since,
            now=self.clock(),
            timeout=self.settings.heartbeat_timeout,
        )

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
            renewed=when, duration=float(spec.get("leaseDurationSeconds") or 40)
        )

    def _judge(self, name: str) -> Judgement:
        return hostjudge.judge(
            self.heartbeats.get(name), now=self.clock(), timeout=self.settings.heartbeat_timeout
        )

    async def check_host(self, name: str) -> None:
        """Judge a host's heartbeat now; react when Ready flips; publish the host status."""
        if name not in self.hosts:
            return
        judgement = self._judge(name)
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
        if self.missing_checked is None or self.clock() - self.missing_checked >= MISSING_CHECK:
            self.missing_checked = self.clock()
            for host in self._named_missing():
                await self._check_missing(host)

    def _named_missing(self) -> list[str]:
        """Hosts named by some VM's status that have no HypervisorHost (any more)."""
        named = {(vm.get("status") or {}).get("host") for vm in self.vms.values()}
        return sorted(h for h in named | set(self.missing) if h and h not in self.hosts)

    async def _check_missing(self, host: str) -> None:
        """The hosts' timers never fire for a host without its object: judge it here.

        Its VMs go Unknown once it is lost and fail over after the grace, as on a lost
        host; a host that has VMs no more is forgotten."""
        bound = self.bound_to(host)
        if not bound:
            self.missing.pop(host, None)
            self.missing_ready.pop(host, None)
            return
        self._notice_missing(host)
        judgement = self.judgement(host)
        assert judgement is not None
        if self.missing_ready.get(host) != judgement.ready:
            self.missing_ready[host] = judgement.ready
            for key, _ in bound:
                await self.reconcile_vm(key)
        await self.evacuation.check(host)

    def _notice_missing(self, host: str) -> bool:
        """Remember when a VM's host was first missed; True if just now."""
        if host in self.hosts or host in self.missing:
            return False
        self.missing[host] = self.clock()
        log.warning("VMs are bound to host %s, which has no HypervisorHost", host)
        return True

    async def _write_host_status(
        self, name: str, judgement: Judgement, drain: dict[str, object] | None
    ) -> None:
        obj = self.hosts[name]
        if name not in self.state:
            return
        allocatable, allocated = hostjudge.resources(
            self.state.inventory(name), self.state.usage(name)
        )
        spec = obj.get("spec") or {}
        current = obj.get("status") or {}
        wanted = hostjudge.controller_host_status(
            judgement=judgement,
            unschedulable=bool(spec.get("unschedulable")),
            maintenance=bool(spec.get("maintenance")),
            allocatable=allocatable,
            allocated=allocated,
            vm_count=self.state.usage(name).vms,
            generation=int(obj["metadata"].get("generation") or 0),
            previous=conditions.previous(current),
            now=self.clock(),
            drain=drain,
            cpu_set_errors=self.state.host(name).cpu_set_errors,
        )
        inventory = self.state.inventory(name)
        for resource, total in (
            ("cpu", inventory.vcpu.total + inventory.pcpu.total),
            ("memory", inventory.memory.total * quantity.MI),
            ("disk", inventory.disk.total * quantity.MI),
        ):
            metrics.HOST_CAPACITY.labels(name, resource).set(total)
        for gauge, amounts in (
            (metrics.HOST_ALLOCATABLE, allocatable),
            (metrics.HOST_ALLOCATED, allocated),
        ):
            gauge.labels(name, "cpu").set(amounts.cpu or 0)
            gauge.labels(name, "memory").set(quantity.to_bytes(amounts.memory or "0"))
            gauge.labels(name, "disk").set(quantity.to_bytes(amounts.disk or "0"))
        if conditions.differs(current, wanted):
            reply = await self.kube.apply_host_status(name, wanted)
            self.hosts[name] = reply

    # -- virtual machines ------------------------------------------------------------------

    async def on_vm(self, event: str | None, obj: Object) -> None:
        key = objects.key(obj["metadata"])
        if event == "DELETED":
            self.vms.pop(key, None)
            self.labelled.pop(key, None)
            self._count_phases()
            self.pending.pop(key, None)
            self.explained.pop(key, None)
            self.evacuation.forget(key)
            self.resizes.forget(key)
            if self.state.release(key) is not None:
                await self.retry_pending()
            return
        self.vms[key] = obj
        self._count_phases()
        with metrics.timed(metrics.RECONCILE_DURATION, "virtualmachine"):
            await self.reconcile_vm(key)

    def _count_phases(self) -> None:
        phases = Counter(
            (vm.get("status") or {}).get("phase") or "Pending" for vm in self.vms.values()
        )
        for phase in lifecycle.PHASES:
            metrics.VMS.labels(phase).set(phases.get(phase, 0))

    async def retry_pending(self) -> None:
        for key in list(self.pending):
            await self.reconcile_vm(key)
        await self.resizes.retry()

    async def reconcile_vm(self, key: str) -> None:
        obj = self.vms.get(key)
        if obj is None:
            return
        try:
            vm = VirtualMachine.model_validate(obj)
        except ValidationError as invalid:
            log.error("%s cannot be read: %s", key, invalid)
            return
        meta = obj["metadata"]
        status = vm.status
        host = status.host if status is not None else None
        if meta.get("deletionTimestamp"):
            await self._finish_deletion(key, obj, host)
            return
        if host is not None:
            await self._reconcile_bound(key, obj, vm, host)
            return
        if vm.spec.run_strategy == "Halted":
            self.pending.pop(key, None)
            await self.write_vm_status(obj, binding=None)
            return
        await self._place(key, obj, vm)

    async def _finish_deletion(self, key: str, obj: Object, host: str | None) -> None:
        finalizers = list(obj["metadata"].get("finalizers") or [])
        if VM_FINALIZER not in finalizers:
            return
        created = bool((obj.get("status") or {}).get("created"))
        if host is not None:
            self._notice_missing(host)
        judgement = self.judgement(host) if host else None
        lost = judgement is not None and not judgement.ready
        if host is not None and created and not lost:
            return  # the agent is still shutting the domain down
        if host is not None and created and lost:
            log.warning("%s: releasing it although host %s is lost", key, host)
        self.state.release(key)
        self.pending.pop(key, None)
        finalizers.remove(VM_FINALIZER)
        meta = obj["metadata"]
        await self.kube.patch_vm(
            meta["namespace"], meta["name"], {"metadata": {"finalizers": finalizers or None}}
        )
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
            self.labelled.pop(key, None)
        elif self.labelled.get(key) != host:
            await self.label(obj, host)
        self._notice_missing(host)
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
        except (ValidationError, ClaimConflict) as error:
            log.error("%s: cannot rebuild its claim on %s: %s", key, host, error)

    async def _place(self, key: str, obj: Object, vm: VirtualMachine) -> None:
        async with self.lock:
            if key in self.state.claims():
                return  # placed by a concurrent reconcile; its bind write is under way
            with metrics.timed(metrics.PLACEMENT_DURATION):
                decision = scheduler.place(
                    self.state, inputs.request(vm), options=self.settings.options
                )
        if not isinstance(decision, Decision):
            reasons = decision.explanation.reasons
            metrics.PLACEMENT_DECISIONS.labels(
                "unschedulable", reasons[0].filter if reasons else "no-hosts"
            ).inc()
            message = decision.message
            self.pending[key] = None
            await self.write_vm_status(obj, binding=None, unschedulable=message)
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
            await self.write_vm_status(obj, binding=binding)
            await self.label(obj, decision.host)
        except Exception:
            # The bind did not land: give the capacity back so the retry starts clean.
            self.state.release(key)
            raise
        log.info("%s: placed on %s (%d hosts considered)", key, decision.host, decision.considered)
        await self.event(obj, "Normal", "Scheduled", decision.message)
        await self.evacuation.placed(key, decision.host)

    async def label(self, obj: Object, host: str) -> Object:
        meta = obj["metadata"]
        key = objects.key(meta)
        finalizers = list(meta.get("finalizers") or [])
        if VM_FINALIZER not in finalizers:
            finalizers.append(VM_FINALIZER)
        reply = await self.kube.patch_vm(
            meta["namespace"],
            meta["name"],
            {"metadata": {"labels": {HOST_LABEL: host}, "finalizers": finalizers}},
        )
        self.vms[key] = reply
        self.labelled[key] = host
        return reply

    async def unlabel(self, obj: Object) -> Object:
        meta = obj["metadata"]
        key = objects.key(meta)
        reply = await self.kube.patch_vm(
            meta["namespace"], meta["name"], {"metadata": {"labels": {HOST_LABEL: None}}}
        )
        self.vms[key] = reply
        self.labelled.pop(key, None)
        return reply

    async def write_vm_status(
        self,
        obj: Object,
        *,
        binding: vmstatus.Binding | None,
        unschedulable: str | None = None,
        host_lost: str | None = None,
        migrated_from: str | None = None,
        last_migration: dict[str, Any] | None = None,
        eviction: dict[str, Any] | None = None,
        resize: ResizeNote | None = None,
    ) -> Object:
        meta = obj["metadata"]
        key = objects.key(meta)
        vm = VirtualMachine.model_validate(obj)
        current = obj.get("status") or {}
        wanted = vmstatus.controller_vm_status(
            vmstatus.ControllerInputs(
                spec=vm.spec,
                generation=int(meta.get("generation") or 0),
                binding=binding,
                unschedulable=unschedulable,
                host_lost=host_lost,
                host_missing=binding is not None and binding.host not in self.hosts,
                migrated_from=migrated_from,
                last_migration=last_migration or current.get("lastMigration"),
                eviction=eviction,
                resize=resize,
            ),
            previous_phase=current.get("phase"),
            previous=conditions.previous(current),
            now=self.clock(),
        )
        written = obj
        if vmstatus.differs(current, wanted):
            written = await self.kube.apply_vm_status(meta["namespace"], meta["name"], wanted)
            self.vms[key] = written
        if binding is None:
            await self._clear_binding(key, written)
        return self.vms.get(key, obj)

    async def _clear_binding(self, key: str, written: Object) -> None:
        """`written`, the VM as unbinding it left it, still names a host: another field
        manager wrote it too (a hand edit), so leaving it out of the apply kept it. Remove
        it outright, unless the VM changed since (then its next event decides again)."""
        status = written.get("status") or {}
        stale = {field: None for field in ("host", "placement") if field in status}
        if not stale:
            return
        log.warning("%s: clearing status %s, which another writer holds too", key, sorted(stale))
        meta = written["metadata"]
        reply = await self.kube.patch_vm_status(
            meta["namespace"],
            meta["name"],
            {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": stale},
        )
        if reply is not None:
            self.vms[key] = reply

    async def event(self, obj: Object, type_: str, reason: str, message: str) -> None:
        try:
            await self.kube.event(
                involved=obj, type_=type_, reason=reason, message=message, component=CONTROLLER
            )
        except Exception as error:
            # An event is a courtesy: losing one must not undo a placement.
            if not is_transient(error):
                log.warning("could not record event %s: %s", reason, error)
