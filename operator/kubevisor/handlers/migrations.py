"""The controller's half of migration: MigrationJobs from request to moved VM.

Live and cold jobs (`spec.mode`) take the same steps here; only the source agent's
transfer differs (a cold one shuts the guest down first, `core.coldmigration`).

A job moves forward only (`core.migration.check_transition`), and each step is one write
that the next watch event builds on:

- Pending: the VM must exist, run, be bound to a Ready host whose hypervisor type can
  live-migrate (`core.migration.refusal`) and have no other migration in flight; the target
  (of the source's type) is chosen by the placement engine with the source excluded (or an
  explicit `spec.targetHost` is checked against the same filters) and admitted against the
  concurrency limits. Over a limit the job waits, saying which; when it fits nowhere it
  fails with the engine's explanation.
- Preparing: the target's capacity is claimed under the job's own key (so a VM placed
  meanwhile cannot take it), its DHCP ports on the VM's Networks are allocated and
  written (`Networks.hold_target`) and the job is labelled with both hosts; the target's agent
  (watching `kubevisor.io/migration-target=HOST`) prepares files and renders the domain
  for the claimed pCPUs, then says `status.targetAgent.ready`.
- Running: the source's agent (watching `kubevisor.io/migration-source=HOST`) transfers
  and reports `status.transfer` and `status.progress`.
- Succeeded: the VM's status host and placement, then its host label, move to the target,
  the source claim is released and the target claim becomes the VM's. Failed and
  Cancelled release the target claim; the VM stays where it runs. Either way the target
  keeps its DHCP ports only where the VM (or another of the Network) is bound now.

Deleting a job that is not finished is a cancel: a finalizer keeps it until it ends.
"""

from __future__ import annotations

import dataclasses
import logging

from pydantic import ValidationError

from kubevisor import metrics
from kubevisor.api import objects, schema
from kubevisor.api.migrationjob import MigrationJob, Phase
from kubevisor.api.virtualmachine import PlacementStatus, VirtualMachine
from kubevisor.api.wire import MIGRATION_FINALIZER, MIGRATION_SOURCE_LABEL, MIGRATION_TARGET_LABEL
from kubevisor.core import coldmigration, conditions, jobstatus, migration
from kubevisor.core import status as vmstatus
from kubevisor.core.migration import Flight, Limits
from kubevisor.core.placement import inputs, scheduler
from kubevisor.core.placement.model import Rejection, Request
from kubevisor.core.placement.scheduler import Decision
from kubevisor.handlers.port import ControllerPort
from kubevisor.kube.client import Kube, Object

log = logging.getLogger("kubevisor.controller.migrations")

IN_FLIGHT: frozenset[Phase] = frozenset({"Scheduling", "Preparing", "Running"})
MIGRATABLE_PHASES = frozenset({"Running", "Paused"})


def claim_key(key: str) -> str:
    """The placement-state key of a job's claim on its target (VM keys have no colon)."""
    return f"migration:{key}"


class Refused(Exception):
    """The job cannot go on; the message says why, for its status and the VM's events."""


class Migrations:
    def __init__(self, controller: ControllerPort, kube: Kube, limits: Limits) -> None:
        self.c = controller
        self.kube = kube
        self.limits = limits
        self.jobs: dict[str, Object] = {}
        """Every MigrationJob by key, as last seen or written."""

    def remember(self, obj: Object) -> None:
        """A job just created (by a drain): known before its watch event arrives."""
        self.jobs[objects.key(obj["metadata"])] = obj

    def moving(self, vm_key: str) -> list[Object]:
        """Every job, in any phase, that moves (or moved) the VM of `vm_key`."""
        return [job for job in self.jobs.values() if objects.job_vm_key(job) == vm_key]

    # -- start-up and events ------------------------------------------------------------

    def load(self, jobs: list[Object]) -> None:
        """Remember every job and re-claim the targets of those in flight."""
        for obj in jobs:
            self.remember(obj)
            self._ensure_target_claim(objects.key(obj["metadata"]))

    async def on_job(self, event: str | None, obj: Object) -> None:
        key = objects.key(obj["metadata"])
        if event == "DELETED":
            self.jobs.pop(key, None)
            if self.c.state.release(claim_key(key)) is not None:
                await self.c.retry_pending()
            await self._target_released(key, obj)
            await self.retry_waiting()
            return
        self.jobs[key] = obj
        await self.reconcile(key)

    async def resync(self, jobs: list[Object], listed_at: str) -> None:
        """`Controller.resync`'s part: the jobs as listed at `listed_at` replace older
        cached ones, jobs gone from the listing are handled as deleted, and every job
        that has not ended is reconciled again."""
        listed = {objects.key(obj["metadata"]): obj for obj in jobs}
        for key, obj in listed.items():
            if not objects.stale(obj, self.jobs.get(key)):
                self.jobs[key] = obj
        for key, cached in list(self.jobs.items()):
            if key not in listed and objects.gone_since(cached, listed_at):
                await self.on_job("DELETED", cached)
        for key, obj in list(self.jobs.items()):
            if not migration.is_terminal(objects.job_phase(obj)):
                await self.reconcile(key)

    async def retry_waiting(self) -> None:
        """Reconsider Pending jobs, oldest first, once a slot or some capacity freed up."""
        waiting = [
            (obj["metadata"].get("creationTimestamp") or "", key)
            for key, obj in self.jobs.items()
            if objects.job_phase(obj) in (None, "Pending")
        ]
        for _, key in sorted(waiting):
            await self.reconcile(key)

    async def on_host_change(self, host: str) -> None:
        """A host's readiness flipped: jobs touching it may have to fail."""
        for key, obj in list(self.jobs.items()):
            status = obj.get("status") or {}
            if objects.job_phase(obj) in IN_FLIGHT and host in (
                status.get("source"),
                status.get("target"),
            ):
                await self.reconcile(key)

    # -- the job's steps -----------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        obj = self.jobs.get(key)
        if obj is None:
            return
        try:
            job = MigrationJob.model_validate(obj)
        except ValidationError as invalid:
            log.error("%s cannot be read: %s", key, invalid)
            return
        phase = job.status.phase if job.status is not None else None
        deleting = bool(obj["metadata"].get("deletionTimestamp"))
        try:
            if migration.is_terminal(phase):
                await self._ended(key, obj, deleting)
            elif phase in (None, "Pending", "Scheduling"):
                await self._start(key, obj, job, cancel=job.spec.cancel or deleting)
            elif phase == "Preparing":
                await self._preparing(key, obj, job, cancel=job.spec.cancel or deleting)
            elif phase == "Running":
                await self._running(key, obj, job)
        except Refused as refused:
            await self._finish(key, obj, "Failed", str(refused))

    async def _ended(self, key: str, obj: Object, deleting: bool) -> None:
        if self.c.state.release(claim_key(key)) is not None:
            await self.c.retry_pending()
        await self._target_released(key, obj)
        finalizers = list(obj["metadata"].get("finalizers") or [])
        if deleting and MIGRATION_FINALIZER in finalizers:
            finalizers.remove(MIGRATION_FINALIZER)
            meta = obj["metadata"]
            await self.kube.patch_job(
                meta["namespace"], meta["name"], {"metadata": {"finalizers": finalizers or None}}
            )

    async def _start(self, key: str, obj: Object, job: MigrationJob, *, cancel: bool) -> None:
        if cancel:
            await self._finish(key, obj, "Cancelled", "cancelled before the transfer started")
            return
        if claim_key(key) in self.c.state.claims():
            return  # admitted by a concurrent reconcile; its writes are under way
        vm_obj, vm, source = self._migratable(obj, job)
        vm_key = objects.job_vm_key(obj)
        # The size claimed, not the spec's: a resize waits for a restart, which a live
        # migration is not, so the target holds what runs.
        request = migration.target_request(
            self.c.networks.claimed_request(vm), source_type=self.c.hypervisor_type(source)
        )
        async with self.c.lock:
            if claim_key(key) in self.c.state.claims():
                return
            decision = self._target(request, source, job.spec.target_host)
            flights = self._flights(excluding=key)
            admission = migration.admit(Flight(key, source, decision.host), flights, self.limits)
            if not admission.admitted:
                await self._write(obj, jobstatus.Step(phase="Pending", reason=admission.reason))
                return
            ports = self.c.networks.hold_target(vm_key, decision.host)
            if ports is not None:
                raise Refused(f"host {decision.host} cannot take the VM: {ports.message}")
            claim = dataclasses.replace(decision.claim, vm=claim_key(key))
            self.c.state.claim(claim)
        placement = (
            inputs.placement_status(decision.numa, size=inputs.recorded_size(vm))
            or PlacementStatus()
        )
        meta = obj["metadata"]
        try:
            await self.c.networks.write_target(vm_key)
            finalizers = [
                *(f for f in meta.get("finalizers") or [] if f != MIGRATION_FINALIZER),
                MIGRATION_FINALIZER,
            ]
            self.jobs[key] = await self.kube.patch_job(
                meta["namespace"],
                meta["name"],
                {
                    "metadata": {
                        "labels": {
                            MIGRATION_SOURCE_LABEL: source,
                            MIGRATION_TARGET_LABEL: decision.host,
                        },
                        "finalizers": finalizers,
                    }
                },
            )
            await self._write(
                self.jobs[key],
                jobstatus.Step(
                    phase="Preparing",
                    source=source,
                    target=decision.host,
                    target_placement=placement.to_wire(),
                ),
            )
        except Exception:
            self.c.state.release(claim_key(key))
            await self.c.networks.migration_ended(vm_key)
            raise
        log.info("%s: migrating %s from %s to %s", key, job.spec.vm, source, decision.host)
        await self.c.event(
            vm_obj,
            "Normal",
            "Migrating",
            f"MigrationJob {meta['name']}: moving from host {source} to host {decision.host}",
        )

    def _flights(self, *, excluding: str) -> list[Flight]:
        """Jobs holding a slot: in flight by their status, or by the target claim this
        controller holds for them (a watch event older than its own write may have
        replaced the cached status)."""
        claims = self.c.state.claims()
        flights = []
        for key, obj in self.jobs.items():
            claim = claims.get(claim_key(key))
            if key == excluding or (objects.job_phase(obj) not in IN_FLIGHT and claim is None):
                continue
            status = obj.get("status") or {}
            vm_status = (self.c.vm(objects.job_vm_key(obj)) or {}).get("status") or {}
            source = status.get("source") or vm_status.get("host") or ""
            target = status.get("target") or (claim.host if claim is not None else None)
            flights.append(Flight(key, source, target))
        return flights

    def _migratable(self, obj: Object, job: MigrationJob) -> tuple[Object, VirtualMachine, str]:
        """The VM to move and its host, or Refused saying why it cannot move now."""
        vm_obj = self.c.vm(objects.job_vm_key(obj))
        if vm_obj is None or vm_obj["metadata"].get("deletionTimestamp"):
            namespace = obj["metadata"].get("namespace") or "default"
            raise Refused(f"VirtualMachine {job.spec.vm} does not exist in {namespace}")
        vm = VirtualMachine.model_validate(vm_obj)
        status = vm.status
        source = status.host if status is not None else None
        phase = status.phase if status is not None else None
        if source is None or phase not in MIGRATABLE_PHASES:
            raise Refused(f"VirtualMachine {job.spec.vm} is {phase or 'Pending'}, not Running")
        judgement = self.c.judgement(source)
        if judgement is None or not judgement.ready:
            raise Refused(f"the VM's host {source} is not Ready")
        source_type = self.c.hypervisor_type(source)
        cold = job.spec.mode == "Cold"
        refusal = (coldmigration if cold else migration).refusal(source_type)
        if refusal is not None:
            raise Refused(refusal)
        for other, other_obj in self.jobs.items():
            same_vm = objects.job_vm_key(other_obj) == objects.job_vm_key(obj)
            if (
                same_vm
                and other != objects.key(obj["metadata"])
                and objects.job_phase(other_obj) in IN_FLIGHT
            ):
                raise Refused(f"MigrationJob {other} is already moving this VM")
        return vm_obj, vm, source

    def _target(self, request: Request, source: str, wanted: str | None) -> Decision:
        state = self.c.state
        if wanted is not None:
            if wanted == source:
                raise Refused(f"the VM already runs on host {wanted}")
            if wanted not in state:
                raise Refused(f"HypervisorHost {wanted} does not exist")
            found = scheduler.evaluate(state, request, wanted)
            if isinstance(found, Rejection):
                raise Refused(f"host {wanted} cannot take the VM: {found.reason}")
            return Decision(request=request, host=wanted, numa=found.numa, weight=0.0, considered=1)
        others = [h.name for h in state.hosts() if h.name != source]
        decision = scheduler.select_host_exhaustive(state, request, hosts=others)
        if not isinstance(decision, Decision):
            raise Refused(f"no other host can take the VM: {decision.message}")
        return decision

    async def _preparing(self, key: str, obj: Object, job: MigrationJob, *, cancel: bool) -> None:
        status = job.status
        assert status is not None
        if cancel:
            await self._finish(key, obj, "Cancelled", "cancelled before the transfer started")
            return
        self._hosts_ready(status.source, status.target)
        target = status.target_agent
        if target is not None and target.ready:
            await self._write(obj, jobstatus.Step(phase="Running", start_time=self.c.clock()))
        elif target is not None and target.message:
            raise Refused(f"host {status.target} could not prepare: {target.message}")

    async def _running(self, key: str, obj: Object, job: MigrationJob) -> None:
        status = job.status
        assert status is not None
        transfer = status.transfer
        if transfer is None or transfer.state == "Running":
            # Once the transfer runs only the source knows how it ends: post-copy may have
            # moved the guest already, so a lost target is the source agent's to report.
            self._hosts_ready(status.source)
            return
        if transfer.state == "Succeeded":
            await self._move(key, obj, job)
            await self._finish(key, obj, "Succeeded", transfer.message or "migrated")
        else:
            await self._finish(key, obj, transfer.state, transfer.message or transfer.state)

    def _hosts_ready(self, *hosts: str | None) -> None:
        for host in hosts:
            judgement = self.c.judgement(host) if host else None
            if host and (judgement is None or not judgement.ready):
                raise Refused(f"host {host} is not Ready")

    async def _move(self, key: str, obj: Object, job: MigrationJob) -> None:
        """Point the VM at the target: its claim, status (host, placement) and label."""
        status = job.status
        assert status is not None and status.source is not None and status.target is not None
        vm_key = objects.job_vm_key(obj)
        vm_obj = self.c.vm(vm_key)
        if vm_obj is None:
            return  # deleted meanwhile; its deletion releases what it held
        claim = self.c.state.release(claim_key(key))
        self.c.state.release(vm_key)
        if claim is not None:
            self.c.state.claim(dataclasses.replace(claim, vm=vm_key))
        placement = status.target_placement or PlacementStatus()
        last = jobstatus.last_migration(
            job=obj["metadata"]["name"],
            source=status.source,
            target=status.target,
            now=self.c.clock(),
        )
        vm_obj = await self.c.write_vm_status(
            vm_obj,
            binding=vmstatus.Binding(host=status.target, placement=placement),
            migrated_from=status.source,
            last_migration=last,
        )
        vm_obj = await self.c.label(vm_obj, status.target)
        log.info("%s: %s now runs on %s", key, vm_key, status.target)
        await self.c.event(
            vm_obj,
            "Normal",
            "Migrated",
            f"MigrationJob {obj['metadata']['name']}: moved from host {status.source} "
            f"to host {status.target}",
        )
        await self.c.retry_pending()

    async def _finish(self, key: str, obj: Object, phase: Phase, reason: str) -> None:
        if self.c.state.release(claim_key(key)) is not None:
            await self.c.retry_pending()
        await self._target_released(key, obj)
        now = self.c.clock()
        await self._write(obj, jobstatus.Step(phase=phase, reason=reason, completion_time=now))
        metrics.MIGRATIONS.labels(phase).inc()
        started = (obj.get("status") or {}).get("startTime")
        if started:
            began = schema.parse_timestamp(str(started))
            metrics.MIGRATION_DURATION.observe(max(0.0, (now - began).total_seconds()))
        if phase != "Succeeded":
            log.info("%s: %s: %s", key, phase, reason)
            vm_obj = self.c.vm(objects.job_vm_key(obj))
            if vm_obj is not None:
                await self.c.event(
                    vm_obj,
                    "Warning",
                    "MigrationFailed" if phase == "Failed" else "MigrationCancelled",
                    f"MigrationJob {obj['metadata']['name']}: {reason}",
                )
        await self.retry_waiting()

    async def _target_released(self, key: str, obj: Object) -> None:
        """Job `key` is over: its VM's Networks keep the target's DHCP ports only where
        the VM is bound now, unless another job (admitted meanwhile) moves the VM."""
        vm_key = objects.job_vm_key(obj)
        claims = self.c.state.claims()
        for other, other_obj in self.jobs.items():
            moving = objects.job_phase(other_obj) in IN_FLIGHT or claim_key(other) in claims
            if other != key and moving and objects.job_vm_key(other_obj) == vm_key:
                return
        await self.c.networks.migration_ended(vm_key)

    def _ensure_target_claim(self, key: str) -> None:
        """After a restart: a job in flight holds its target (capacity and DHCP ports) as
        it did before."""
        obj = self.jobs[key]
        status = obj.get("status") or {}
        target = status.get("target")
        if objects.job_phase(obj) not in IN_FLIGHT or not target or target not in self.c.state:
            return
        self.c.networks.hold_target(objects.job_vm_key(obj), target)
        if claim_key(key) in self.c.state.claims():
            return
        vm_obj = self.c.vm(objects.job_vm_key(obj))
        if vm_obj is None:
            return
        try:
            job = MigrationJob.model_validate(obj)
            placement = job.status.target_placement if job.status is not None else None
            moved = inputs.as_bound(VirtualMachine.model_validate(vm_obj), target, placement)
            claim = inputs.claim(moved, self.c.state.host(target))
            if claim is not None:
                self.c.state.claim(dataclasses.replace(claim, vm=claim_key(key)))
        except ValueError as error:  # unreadable, or a claim the target cannot hold
            log.error("%s: cannot re-claim its target %s: %s", key, target, error)

    # -- writing ---------------------------------------------------------------------------

    async def _write(self, obj: Object, step: jobstatus.Step) -> None:
        """Apply the controller's part of the job's status after `step`."""
        current = obj.get("status") or {}
        generation = int(obj["metadata"].get("generation") or 0)
        wanted = jobstatus.job_status(
            step, current=current, generation=generation, now=self.c.clock()
        )
        if not conditions.differs(current, wanted):
            return
        meta = obj["metadata"]
        reply = await self.kube.apply_job_status(meta["namespace"], meta["name"], wanted)
        self.jobs[objects.key(obj["metadata"])] = reply
