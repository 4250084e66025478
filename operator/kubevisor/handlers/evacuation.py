"""Moving VMs off a host the controller gives up on: maintenance drains and lost hosts.

- Drain (`spec.maintenance: true`): placement already skips the host; on every host check
  each VM still bound to it takes its `core.drain.step` — a MigrationJob (labelled
  `kubevisor.io/drain=HOST`) for a running LiveMigrate VM on a type that can live-migrate,
  an eviction for the rest. The host's `status.drain` shows how far it got.
- Eviction: the controller sets `status.eviction` on the VM; the bound host's agent shuts
  the guest down gracefully and removes the domain (`created: false`); then the controller
  unbinds the VM — status first, then the label: agents act only on VMs whose status.host
  is their own, so the old host's agent leaves it alone in between — and places it again
  like a new VM.
- Host loss: once a host's heartbeat has been expired for `failover_grace` seconds, and
  for at least its agent's self-fence deadline plus `fence_margin` since its last renewal
  (`core.selffence.failover_delay`: its agent has destroyed its guests by then), every
  VM on it whose run strategy restarts after a crash is unbound and placed elsewhere
  (placement strongly prefers hosts with the shared storage its disks live in). Once it
  has a host, an event says where it restarts and with which disks: from its shared
  storage, or (a Warning) from its image, without the changes it made on the lost host.
  The lost host's agent, if it comes back, fences (destroys) those domains before it
  reports Ready. A host whose agent does not fence itself (it published no deadline) fails
  over after the grace alone, and a host that was only cut off from the API server may then
  run both copies for a while (the README's split brain).
- Evacuate on demand (`spec.evacuate`, set by `kubevisor evacuate`): every VM of a lost
  host is unbound now, without the grace, once `core.evacuate.decide` says its old copies
  are stopped (confirmed by hand, or its agent's self-fence deadline passed); refused while
  the host is Ready. The outcome goes to status.evacuation and an event on the host; each
  VM's Rescheduling event says how its old copy was stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import ValidationError

from kubevisor.api import objects, schema
from kubevisor.api.migrationjob import KIND as JOB_KIND
from kubevisor.api.virtualmachine import VirtualMachine, VmStorage
from kubevisor.api.wire import API_VERSION, DRAIN_LABEL
from kubevisor.core import drain, evacuate, hypervisors, lifecycle, migration, powerfence, selffence
from kubevisor.core import hosts as hostjudge
from kubevisor.core import status as vmstatus
from kubevisor.core.hosts import Judgement
from kubevisor.handlers.migrations import Migrations
from kubevisor.handlers.port import ControllerPort
from kubevisor.handlers.powerfencing import PowerFencing
from kubevisor.kube.client import Kube, Object

log = logging.getLogger("kubevisor.controller.evacuation")


@dataclass(frozen=True, slots=True)
class Failover:
    """A VM unbound from its lost host, until placement finds it another."""

    lost: str
    storage: VmStorage | None
    """Where its agent last said its disks live."""


class Evacuation:
    def __init__(
        self,
        controller: ControllerPort,
        kube: Kube,
        migrations: Migrations,
        *,
        grace: float | None,
        margin: float = selffence.DEFAULT_MARGIN,
        power: PowerFencing,
    ) -> None:
        """`grace`: the failover grace (None: no failover); `margin`: the fence margin;
        `power`: the power fencing of hosts with spec.fencing."""
        self.c = controller
        self.kube = kube
        self.migrations = migrations
        self.power = power
        self.failover_grace = grace
        self.fence_margin = margin
        self.failovers: dict[str, Failover] = {}
        self.delays: dict[str, str] = {}
        """Per lost host: why its failover waits longer than the grace (its host status)."""
        self.requests: dict[str, dict[str, object]] = {}
        """Per host: the outcome of its last spec.evacuate request (status.evacuation)."""

    async def check(self, host: str) -> dict[str, object] | None:
        """React to the host's state; returns its `status.drain` while it is in maintenance."""
        judgement = self.c.judgement(host)
        self.delays.pop(host, None)
        if judgement is None or judgement.ready:
            self.power.forget(host)
        elif self.power.configured(host) is not None:
            await self._power_fence(host, judgement)
        elif self.failover_grace is not None:
            delay = self._delay(host, judgement)
            if delay.message is not None:
                self.delays[host] = delay.message
            if judgement.down_for >= delay.after:
                await self._failover(host, judgement, lost=self._lost(host, judgement))
        await self._on_demand(host, judgement)
        spec = (self.c.host(host) or {}).get("spec") or {}
        if not spec.get("maintenance"):
            return None
        if judgement is None or not judgement.ready:
            return self._progress(host)
        return await self._drain(host)

    async def _power_fence(self, host: str, judgement: Judgement) -> None:
        """A lost host with spec.fencing: power it off (when automatic failover is on, or an
        evacuation waits for it), then fail it over at once, without the grace; after a
        failed fence its VMs stay where they are."""
        request = ((self.c.host(host) or {}).get("spec") or {}).get("evacuate")
        if self.failover_grace is None and not evacuate.pending(request, self.evacuation(host)):
            return
        outcome = await self.power.fence_if_due(host)
        if self.failover_grace is not None and outcome is not None and outcome.off:
            await self._failover(
                host,
                judgement,
                lost=f"host {host} was lost and powered off through its BMC",
                stopped=powerfence.stopped(outcome),
            )

    def _delay(self, host: str, judgement: Judgement) -> selffence.FailoverDelay:
        assert self.failover_grace is not None
        return selffence.failover_delay(
            grace=self.failover_grace,
            timeout=judgement.timeout,
            deadline=self.deadline(host),
            margin=self.fence_margin,
        )

    def deadline(self, host: str) -> float | None:
        """The self-fence deadline the host's agent published; None: it fences not."""
        status = (self.c.host(host) or {}).get("status") or {}
        deadline = (status.get("selfFence") or {}).get("deadlineSeconds")
        return float(deadline) if isinstance(deadline, int | float) else None

    def notes(self, host: str, judgement: Judgement) -> hostjudge.FailoverNotes:
        """What the host's status says of its failover, fencing and evacuation."""
        obj = self.c.host(host) or {}
        status = obj.get("status") or {}
        request = (obj.get("spec") or {}).get("evacuate") or {}
        record = self.evacuation(host) or {}
        confirmed = None
        if (
            record.get("outcome") == "Evacuated"
            and request.get("confirmedFenced")
            and record.get("requestedAt") == request.get("requestedAt")
        ):
            confirmed = schema.parse_timestamp(str(record.get("time") or request["requestedAt"]))
        lost = not judgement.ready
        power_fencing = self.power.configured(host) is not None
        row, fenced_at = selffence.fenced(
            ready=not lost,
            silent_for=judgement.down_for + judgement.timeout
            if lost and judgement.timeout
            else None,
            deadline=self.deadline(host),
            confirmed=confirmed,
            now=self.c.clock(),
            power_fencing=power_fencing,
            powered=self.power.outcome(host),
        )
        before = status.get("lastFenced")
        return hostjudge.FailoverNotes(
            delay=self.delays.get(host),
            evacuation=self.evacuation(host),
            fenced=row,
            last_fenced=fenced_at or (schema.parse_timestamp(str(before)) if before else None),
            fencing_failed=powerfence.fencing_failed(
                host, ready=not lost, outcome=self.power.outcome(host)
            )
            if power_fencing
            else None,
        )

    def evacuation(self, host: str) -> dict[str, object] | None:
        """The host's status.evacuation: as decided here, else as the object holds it."""
        status = (self.c.host(host) or {}).get("status") or {}
        return self.requests.get(host) or status.get("evacuation")

    async def _on_demand(self, host: str, judgement: Judgement | None) -> None:
        obj = self.c.host(host)
        request = ((obj or {}).get("spec") or {}).get("evacuate")
        settled = self.evacuation(host)
        if obj is None or request is None or not evacuate.pending(request, settled):
            return
        lost = judgement is not None and not judgement.ready
        verdict = evacuate.decide(
            host=host,
            ready=not lost,
            confirmed=bool(request.get("confirmedFenced")),
            silent_for=judgement.down_for + judgement.timeout
            if judgement is not None and lost and judgement.timeout
            else None,
            deadline=self.deadline(host),
            margin=self.fence_margin,
            power_fencing=self.power.configured(host) is not None,
            powered=self.power.outcome(host),
        )
        self.requests[host] = {
            "requestedAt": request["requestedAt"],
            "outcome": verdict.outcome,
            "message": verdict.message,
            "time": schema.timestamp(self.c.clock()),
        }
        if (settled or {}).get("requestedAt") != request["requestedAt"] or (
            verdict.outcome != "Waiting"
        ):
            kind = "Warning" if verdict.outcome == "Refused" else "Normal"
            log.info("host %s: evacuation %s: %s", host, verdict.outcome, verdict.message)
            await self.c.event(obj, kind, f"Evacuation{verdict.outcome}", verdict.message)
        if verdict.stopped is not None and judgement is not None:
            await self._failover(
                host,
                judgement,
                lost=f"host {host} was evacuated on request",
                stopped=verdict.stopped,
                every=True,
            )

    def _residents(self, host: str) -> list[tuple[str, Object]]:
        return [
            (key, obj)
            for key, obj in self.c.bound_to(host)
            if not obj["metadata"].get("deletionTimestamp")
        ]

    def _resident(self, key: str, obj: Object, host: str) -> drain.Resident | None:
        try:
            vm = VirtualMachine.model_validate(obj)
        except ValidationError:
            return None
        status = obj.get("status") or {}
        name = obj["metadata"]["name"]
        jobs = self.migrations.moving(key)
        return drain.Resident(
            name=name,
            strategy=vm.spec.eviction_strategy,
            phase=status.get("phase"),
            migrating=any(not migration.is_terminal(objects.job_phase(j)) for j in jobs),
            evicting=status.get("eviction") is not None,
            failed_migrations=sum(
                1
                for j in jobs
                if objects.job_phase(j) == "Failed"
                and (j["metadata"].get("labels") or {}).get(DRAIN_LABEL) == host
            ),
            live_migration=hypervisors.can_live_migrate(self.c.hypervisor_type(host)),
        )

    def _progress(self, host: str) -> dict[str, object]:
        residents = [self._resident(k, o, host) for k, o in self._residents(host)]
        return drain.progress([r for r in residents if r is not None]).to_wire()

    async def _drain(self, host: str) -> dict[str, object]:
        for key, obj in self._residents(host):
            resident = self._resident(key, obj, host)
            if resident is None:
                continue
            step = drain.step(resident)
            if step is drain.Step.MIGRATE:
                await self._migrate(key, obj, host)
            elif step is drain.Step.EVICT:
                reason = f"host {host} is in maintenance"
                if resident.strategy == "LiveMigrate" and not resident.live_migration:
                    reason += f" and {self.c.hypervisor_type(host)} hosts cannot live-migrate"
                await self.evict(key, obj, host, reason)
        return self._progress(host)

    async def _migrate(self, key: str, obj: Object, host: str) -> None:
        meta = obj["metadata"]
        body = {
            "apiVersion": API_VERSION,
            "kind": JOB_KIND,
            "metadata": {
                "generateName": f"{meta['name'][:40]}-drain-",
                "namespace": meta["namespace"],
                "labels": {DRAIN_LABEL: host},
            },
            "spec": {"vm": meta["name"]},
        }
        created = await self.kube.create_job(meta["namespace"], body)
        # Known at once, so the next host check does not create a second one.
        self.migrations.remember(created)
        log.info(
            "%s: draining host %s with MigrationJob %s", key, host, created["metadata"]["name"]
        )
        await self.c.event(
            obj,
            "Normal",
            "Draining",
            f"host {host} is in maintenance: live-migrating (MigrationJob "
            f"{created['metadata']['name']})",
        )

    async def evict(self, key: str, obj: Object, host: str, reason: str) -> None:
        """Ask the host's agent to stop the VM; `finish_eviction` takes it from there."""
        vm = VirtualMachine.model_validate(obj)
        placement = vm.status.placement if vm.status is not None else None
        await self.c.write_vm_status(
            obj,
            binding=vmstatus.Binding(host=host, placement=placement),
            eviction={"host": host, "reason": reason},
        )
        log.info("%s: evicting from %s: %s", key, host, reason)
        await self.c.event(obj, "Normal", "Evicting", f"stopping the VM on host {host}: {reason}")

    async def finish_eviction(self, key: str, obj: Object) -> bool:
        """Unbind an evicted VM once its agent removed the domain; True if it did."""
        status = obj.get("status") or {}
        eviction = status.get("eviction") or {}
        if not eviction or eviction.get("host") != status.get("host") or status.get("created"):
            return False
        await self.unbind(key, obj, f"stopped on host {eviction['host']}: {eviction['reason']}")
        return True

    async def unbind(self, key: str, obj: Object, why: str) -> None:
        """Forget the VM's host and place it again, as a new VM."""
        await self.c.write_vm_status(obj, binding=None)
        # Released only once the cache says unbound: a host event handled while the write
        # was in flight re-claims every VM the cache still shows bound there
        # (`Controller.on_host`), and that claim would have been left over.
        self.c.state.release(key)
        obj = await self.c.unlabel(obj)
        await self.c.event(obj, "Normal", "Rescheduling", f"{why}; placing it again")
        await self.c.reconcile_vm(key)

    def _lost(self, host: str, judgement: Judgement) -> str:
        """What a failover after the grace says of the host."""
        down_for = judgement.down_for
        if judgement.reason == hostjudge.HOST_NOT_FOUND:
            lost = f"host {host} has had no HypervisorHost and no heartbeat for {down_for:.0f}s"
        else:
            lost = f"host {host} lost its heartbeat {down_for:.0f}s ago"
        return lost + f" (failover grace {self.failover_grace:.0f}s)"

    async def _failover(
        self,
        host: str,
        judgement: Judgement,
        *,
        lost: str,
        stopped: str | None = None,
        every: bool = False,
    ) -> None:
        """Unbind the VMs of a lost host to place them elsewhere: those that restart after a
        crash, or with `every` (an operator's request) every one. `lost` says what became
        of the host, `stopped` how their old copies were stopped (default: by its agent's
        self-fencing, if it fences itself), both for the VMs' events."""
        if stopped is None:
            deadline = self.deadline(host)
            stopped = (
                evacuate.self_fenced(deadline)
                if deadline is not None
                else f"not confirmed stopped: host {host}'s agent does not fence itself"
            )
        for key, obj in self._residents(host):
            try:
                vm = VirtualMachine.model_validate(obj)
            except ValidationError:
                continue
            if not every and not lifecycle.restarts_after_host_loss(vm.spec.run_strategy):
                continue
            log.warning("%s: %s: starting it elsewhere", key, lost)
            storage = vm.status.storage if vm.status is not None else None
            self.failovers[key] = Failover(lost=host, storage=storage)
            if (obj.get("status") or {}).get("phase") != "Unknown":
                # Not yet marked (e.g. the host was lost before this controller started):
                # say so first; only from Unknown may a bound VM go back to Pending.
                placement = vm.status.placement if vm.status is not None else None
                obj = await self.c.write_vm_status(
                    obj,
                    binding=vmstatus.Binding(host=host, placement=placement),
                    host_lost=f"host {host} is not Ready: {judgement.message}",
                )
            await self.unbind(key, obj, f"{lost}; its old copy was {stopped}")

    def forget(self, key: str) -> None:
        """The VM is gone: no failover of it left to report."""
        self.failovers.pop(key, None)

    async def placed(self, key: str, host: str) -> None:
        """Placement bound the VM to `host`: after a failover, say how it restarts there."""
        failover = self.failovers.pop(key, None)
        if failover is None:
            return
        notice = lifecycle.failover_notice(
            lost=failover.lost,
            target=host,
            storage=failover.storage,
            target_storage=self.c.state.host(host).shared_storage,
        )
        log.info("%s: %s", key, notice.message)
        vm = self.c.vm(key)
        if vm is not None:
            await self.c.event(vm, notice.type, notice.reason, notice.message)
