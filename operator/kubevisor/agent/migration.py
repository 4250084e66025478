"""The agents' half of live migration: the target prepares, the source transfers.

Each agent watches the MigrationJobs labelled with its host as source
(`kubevisor.io/migration-source`) or target (`kubevisor.io/migration-target`); the
controller sets those labels when it admits a job and claims the target
(handlers/migrations.py). The two agents never talk to each other: the job's status is the
hand-off, each writing its own part under its own field manager.

- Target, when the job is Preparing: creates the VM's files here (overlays on the same base
  images, seed ISO), renders the domain for this host's paths and the pCPUs the controller
  claimed here, and publishes it with the libvirt and QEMU addresses the source must use in
  `status.targetAgent`. Until the job ends the incoming domain is not fenced.
- Source, when the job is Running: for a cold job (`spec.mode: Cold`) first shuts the guest
  down and starts its domain again paused (agent/coldmove.py); then starts a peer-to-peer
  migration with the job's options, samples libvirt's job statistics about once a second
  into `status.progress`, and lets `core.migration.step` decide on timeouts (post-copy or
  abort) and cancels; the outcome goes to `status.transfer`. A VM that left is remembered,
  so its vanished domain is not mistaken for a guest that needs starting before the
  controller moves its label.

The migrator reaches the rest of the agent only through `AgentPort`; the agent asks it
about migrating VMs only through the methods under "what the agent asks".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from pydantic import ValidationError

from kubevisor import metrics
from kubevisor.agent import coldmove
from kubevisor.agent.network import NetworkNotReady
from kubevisor.api import quantity
from kubevisor.api.hypervisorhost import SharedStorage
from kubevisor.api.migrationjob import MigrationJob
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.api.wire import (
    MIGRATION_SOURCE_LABEL,
    MIGRATION_SOURCE_MANAGER,
    MIGRATION_TARGET_LABEL,
    MIGRATION_TARGET_MANAGER,
)
from kubevisor.core import migration
from kubevisor.core.domain import converter, document
from kubevisor.core.domain.host import HostEnvironment
from kubevisor.core.migration import Action, JobStats
from kubevisor.drivers.base import Hypervisor, HypervisorError, MigrationAborted, MigrationRequest
from kubevisor.kube.client import Kube, Object
from kubevisor.kube.errors import Gone, is_transient, retrying

log = logging.getLogger("kubevisor.agent.migration")

PROGRESS_INTERVAL = 1.0  # seconds between progress samples (and writes)
FIRST_SAMPLE = 0.2  # seconds from the start to the first sample
NETWORK_WAIT = (10.0, 0.5)
"""Seconds a target waits for the incoming VM's Networks to be realisable here, and between
two tries. The controller writes the target's DHCP ports into the Networks' status before
the job goes Preparing, but the agent's Network watch may deliver that after its job watch
delivered Preparing."""


def job_key(obj: Object) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


class AgentPort(Protocol):
    """What the migrator asks of the agent it runs in."""

    def bound_vm(self, key: str) -> Object | None:
        """The VM of this key bound to this host, as the agent's watch last delivered it."""
        ...

    def owns(self, uid: str) -> bool:
        """A VM of this uid is bound here, or its domain is still the agent's to remove."""
        ...

    def requeue(self, key: str) -> None:
        """Reconcile the VM of this key again (its migration started or ended)."""
        ...

    def shared_storage(self) -> SharedStorage | None:
        """The host's shared storage, as last read."""
        ...

    async def environment(self, vm: VirtualMachine, uid: str) -> HostEnvironment:
        """This host as the domain XML needs it, with the VM's files created here (in the
        host's shared storage as it is now)."""
        ...

    async def remove_stray(self, uid: str) -> None:
        """Destroy and remove a domain and its files that nothing binds here."""
        ...


class Migrator:
    def __init__(
        self,
        agent: AgentPort,
        *,
        kube: Kube,
        hypervisor: Hypervisor,
        host: str,
        libvirt_uri: str,
        migrate_uri: str | None,
        clock: Callable[[], float] = time.monotonic,
        sampling: tuple[float, float] = (FIRST_SAMPLE, PROGRESS_INTERVAL),
        network_wait: tuple[float, float] = NETWORK_WAIT,
        shutdown_grace: float = 30.0,
    ) -> None:
        self._agent = agent
        self._kube = kube
        self._hv = hypervisor
        self.host = host
        self.libvirt_uri = libvirt_uri
        self.migrate_uri = migrate_uri
        self._clock = clock
        self._sampling = sampling
        """Seconds to the first sample of a transfer, and between the later ones."""
        self._network_wait = network_wait
        self._shutdown_grace = shutdown_grace
        """Seconds a cold move waits for the guest to power off before destroying it."""
        self._jobs: dict[str, Object] = {}
        self._transfers: dict[str, asyncio.Task[None]] = {}
        self._finished: set[str] = set()
        """Jobs whose transfer this agent ran to its end (until the job is deleted)."""
        self._cancels: dict[str, asyncio.Event] = {}
        self._migrating: dict[str, str] = {}
        """VM key -> target host, while this (source) agent transfers it."""
        self._cold: set[str] = set()
        """VM keys of `_migrating` whose job moves them cold."""
        self._departed: set[str] = set()
        """uids of VMs this agent migrated away whose label has not moved yet."""
        self._incoming: dict[str, str] = {}
        """uid -> job key of VMs migrating here: their domains are not strays."""
        self._resource_versions: dict[str, str] = {}
        self.job_stats: dict[str, JobStats] = {}
        """uid -> the latest sample of each outgoing transfer (the per-VM metrics read it)."""

    # -- watching -----------------------------------------------------------------------

    def selectors(self) -> list[str]:
        return [f"{MIGRATION_SOURCE_LABEL}={self.host}", f"{MIGRATION_TARGET_LABEL}={self.host}"]

    async def load(self) -> None:
        """List this host's jobs (before fencing: an incoming domain is not a stray)."""
        for selector in self.selectors():
            items, version = await retrying(
                "listing MigrationJobs", functools.partial(self._list, selector)
            )
            self._resource_versions[selector] = version
            for obj in items:
                self._jobs[job_key(obj)] = obj
                self._note_incoming(obj)

    async def _list(self, selector: str) -> tuple[list[Object], str]:
        return await self._kube.list_jobs(label_selector=selector)

    def tasks(self) -> list[Coroutine[Any, Any, None]]:
        return [self._watch(selector) for selector in self.selectors()]

    async def start(self) -> None:
        """Act on the listed jobs (after the agent is ready); a transfer this host's agent
        started before it restarted is reported ended, only here."""
        for key in list(self._jobs):
            await self._handle(key, listed=True)

    async def _watch(self, selector: str) -> None:
        version = self._resource_versions[selector]
        while True:
            try:
                async for kind, obj in self._kube.watch_jobs(
                    label_selector=selector, resource_version=version
                ):
                    version = obj["metadata"]["resourceVersion"]
                    if kind == "BOOKMARK":
                        continue
                    await self.on_job(kind, obj)
            except Gone:
                items, version = await retrying(
                    "listing MigrationJobs", functools.partial(self._list, selector)
                )
                for obj in items:
                    await self.on_job("MODIFIED", obj)
            except Exception as error:
                if not is_transient(error):
                    raise
                log.warning("MigrationJob watch broke (%s); watching again", error)
                await asyncio.sleep(1.0)

    async def on_job(self, kind: str, obj: Object) -> None:
        key = job_key(obj)
        if kind == "DELETED":
            self._jobs.pop(key, None)
            self._finished.discard(key)
            if key in self._cancels:
                self._cancels[key].set()
            await self._target_ended(obj)
            return
        self._jobs[key] = obj
        self._note_incoming(obj)
        try:
            await self._handle(key)
        except Exception:
            log.exception("%s: handling the MigrationJob failed", key)

    def _note_incoming(self, obj: Object) -> None:
        labels = obj["metadata"].get("labels") or {}
        uid = ((obj.get("status") or {}).get("targetAgent") or {}).get("vmUID")
        if labels.get(MIGRATION_TARGET_LABEL) == self.host and uid:
            self._incoming[uid] = job_key(obj)

    async def _handle(self, key: str, *, listed: bool = False) -> None:
        obj = self._jobs[key]
        try:
            job = MigrationJob.model_validate(obj)
        except ValidationError as invalid:
            log.error("%s cannot be read: %s", key, invalid)
            return
        labels = obj["metadata"].get("labels") or {}
        if labels.get(MIGRATION_TARGET_LABEL) == self.host:
            await self._as_target(key, obj, job)
        if labels.get(MIGRATION_SOURCE_LABEL) == self.host:
            await self._as_source(key, obj, job, listed=listed)

    async def _as_target(self, key: str, obj: Object, job: MigrationJob) -> None:
        status = job.status
        phase = status.phase if status is not None else None
        if migration.is_terminal(phase):
            await self._target_ended(obj)
        elif phase == "Preparing" and (status is None or status.target_agent is None):
            await self._prepare(key, obj, job)

    async def _as_source(self, key: str, obj: Object, job: MigrationJob, *, listed: bool) -> None:
        status = job.status
        phase = status.phase if status is not None else None
        stopping = job.spec.cancel or bool(obj["metadata"].get("deletionTimestamp"))
        if stopping and key in self._cancels:
            self._cancels[key].set()
        transfer = status.transfer if status is not None else None
        # A watch event may be older than this agent's own writes: a job whose transfer
        # it already ran is never started (or judged orphaned) again.
        if phase != "Running" or key in self._transfers or key in self._finished:
            return
        if transfer is None:
            self._cancels[key] = asyncio.Event()
            if stopping:
                self._cancels[key].set()
            self._transfers[key] = asyncio.create_task(self._transfer(key, job))
        elif transfer.state == "Running" and listed:
            await self._orphaned(key, job)

    # -- target ---------------------------------------------------------------------------

    async def _prepare(self, key: str, obj: Object, job: MigrationJob) -> None:
        namespace = obj["metadata"]["namespace"]
        written: dict[str, Any]
        try:
            vm_obj = await self._kube.get_vm(namespace, job.spec.vm)
            if vm_obj is None:
                raise LookupError(f"VirtualMachine {job.spec.vm} is gone")
            uid = vm_obj["metadata"]["uid"]
            self._incoming[uid] = key
            assert job.status is not None
            vm_obj = {
                **vm_obj,
                "status": {
                    **(vm_obj.get("status") or {}),
                    "host": self.host,
                    "placement": (job.status.target_placement.to_wire())
                    if job.status.target_placement is not None
                    else {},
                },
            }
            vm = VirtualMachine.model_validate(vm_obj)
            xml = converter.render(vm, host=await self._environment(vm, uid))
            written = {
                "ready": True,
                "libvirtURI": self.libvirt_uri,
                "domainXML": xml,
                "vmUID": uid,
            }
            if self.migrate_uri is not None:
                written["migrateURI"] = self.migrate_uri
        except (
            HypervisorError,
            LookupError,
            ValidationError,
            document.DomainError,
            OSError,
        ) as error:
            log.warning("%s: cannot prepare the target: %s", key, error)
            written = {"ready": False, "message": str(error)}
        await self._kube.apply_job_status(
            namespace,
            obj["metadata"]["name"],
            {"targetAgent": written},
            manager=MIGRATION_TARGET_MANAGER,
        )

    async def _environment(self, vm: VirtualMachine, uid: str) -> HostEnvironment:
        """The agent's environment for the incoming VM, its Networks waited for (a
        NetworkNotReady is tried again for `network_wait`, then reported)."""
        wait, interval = self._network_wait
        deadline = self._clock() + wait
        while True:
            try:
                return await self._agent.environment(vm, uid)
            except NetworkNotReady:
                if self._clock() >= deadline:
                    raise
            await asyncio.sleep(interval)

    async def _target_ended(self, obj: Object) -> None:
        """A job to this host ended: unless the VM is bound here now, nothing of it stays."""
        key = job_key(obj)
        status = obj.get("status") or {}
        uid = (status.get("targetAgent") or {}).get("vmUID")
        if not uid or self._incoming.get(uid) != key:
            return
        if status.get("phase") == "Succeeded":
            # The VM is bound here: it stays incoming (not fenced, files kept) until the VM
            # watch, which may lag this one, brings it in (`bound_here`).
            return
        del self._incoming[uid]
        if not self._agent.owns(uid):
            await self._agent.remove_stray(uid)

    # -- source ---------------------------------------------------------------------------

    async def _transfer(self, key: str, job: MigrationJob) -> None:
        namespace, name = key.split("/", 1)
        vm_key = f"{namespace}/{job.spec.vm}"
        status = job.status
        assert status is not None and status.target is not None
        vm_obj = self._agent.bound_vm(vm_key)
        report = Report(self._kube, namespace, name)
        try:
            if vm_obj is None:
                raise HypervisorError(f"VirtualMachine {job.spec.vm} is not bound to {self.host}")
            target = status.target_agent
            if target is None or not target.ready or not target.libvirt_uri:
                raise HypervisorError("the target has not published where to migrate to")
            uid = vm_obj["metadata"]["uid"]
            vm = VirtualMachine.model_validate(vm_obj)
            self._migrating[vm_key] = status.target
            if job.spec.mode == "Cold":
                self._cold.add(vm_key)
            self._agent.requeue(vm_key)
            await report.transfer("Running")
            outcome = await self._run(
                uid,
                job,
                vm,
                dest_uri=target.libvirt_uri,
                xml=target.domain_xml,
                migrate_uri=target.migrate_uri,
                report=report,
            )
        except MigrationAborted as aborted:
            outcome = ("Cancelled" if self._cancels[key].is_set() else "Failed", str(aborted))
        except (HypervisorError, ValidationError) as error:
            outcome = ("Failed", str(error))
        finally:
            self._finished.add(key)
            self._migrating.pop(vm_key, None)
            self._cold.discard(vm_key)
            self._transfers.pop(key, None)
            self._cancels.pop(key, None)
            self._agent.requeue(vm_key)
        log.info("%s: transfer %s: %s", key, *outcome)
        await retrying("reporting the transfer", lambda: report.transfer(*outcome))

    async def _run(
        self,
        uid: str,
        job: MigrationJob,
        vm: VirtualMachine,
        *,
        dest_uri: str,
        xml: str | None,
        migrate_uri: str | None,
        report: Report,
    ) -> tuple[str, str]:
        key = f"{job.metadata['namespace']}/{job.metadata['name']}"
        options = job.spec.options
        cold = job.spec.mode == "Cold"
        if cold:
            await coldmove.ready_for_transfer(
                self._hv, uid, shutdown_grace=self._shutdown_grace, job=key
            )
        shared = self._agent.shared_storage()
        source_xml = await self._hv.domain_xml(uid)
        disks = migration.disks_to_copy(source_xml, xml, shared.path if shared else None)
        kept = sorted(set(migration.writable_disks(source_xml)) - set(disks))
        log.info("%s: copying disks %s, sharing %s", key, disks or "none", kept or "none")
        monitor = migration.Monitor(started_at=self._clock())
        move = asyncio.create_task(
            self._hv.migrate(
                uid,
                MigrationRequest(
                    dest_uri=dest_uri,
                    xml=xml,
                    bandwidth_mibps=options.bandwidth_mi_bps,
                    auto_converge=bool(options.auto_converge),
                    post_copy=bool(options.post_copy),
                    max_downtime_ms=options.max_downtime_ms,
                    migrate_uri=migrate_uri,
                    copy_disks=disks,
                    shared_disks=bool(kept),
                ),
            )
        )
        try:
            monitor = await self._monitor(key, uid, job, vm, move, monitor, report)
            try:
                await move
            except MigrationAborted as error:
                raise MigrationAborted(monitor.aborted or str(error)) from error
        finally:
            if not move.done():
                move.cancel()
            metrics.MIGRATION_BYTES.inc(monitor.moved)
        self._departed.add(uid)
        elapsed = self._clock() - monitor.started_at
        suffix = " (post-copy)" if monitor.post_copy else ""
        moved = "moved cold" if cold else "migrated"
        return "Succeeded", f"{moved} in {elapsed:.1f}s{suffix}"

    async def _monitor(
        self,
        key: str,
        uid: str,
        job: MigrationJob,
        vm: VirtualMachine,
        move: asyncio.Task[None],
        monitor: migration.Monitor,
        report: Report,
    ) -> migration.Monitor:
        """Sample the job until `move` ends: report its progress, and abort it or switch it
        to post-copy as `core.migration.step` decides. Returns the monitor as it ended."""
        cancel = self._cancels[key]
        memory = quantity.to_bytes(vm.spec.memory.size)
        waker = asyncio.create_task(cancel.wait())
        try:
            while not move.done():
                # Sampled early at first: a small guest moves in about a second.
                first, later = self._sampling
                sampled = monitor.watermark is not None and monitor.watermark.processed
                await asyncio.wait(
                    {move, waker},
                    timeout=later if sampled else first,
                    return_when="FIRST_COMPLETED",
                )
                if move.done():
                    break
                stats = None
                with contextlib.suppress(HypervisorError):
                    stats = await self._hv.job_stats(uid)
                decided = migration.step(
                    monitor,
                    stats,
                    now=self._clock(),
                    options=job.spec.options,
                    memory_bytes=memory,
                    cancel_requested=cancel.is_set(),
                )
                monitor = decided.monitor
                if stats is not None:
                    self.job_stats[uid] = stats
                    await report.progress(migration.progress(stats).to_wire(), monitor.post_copy)
                monitor = await self._act(key, uid, decided)
        finally:
            waker.cancel()
            self.job_stats.pop(uid, None)
        return monitor

    async def _act(self, key: str, uid: str, decided: migration.Step) -> migration.Monitor:
        """Abort the job or switch it to post-copy, as decided; the monitor after that."""
        if decided.action is Action.ABORT:
            log.info("%s: aborting: %s", key, decided.reason)
            with contextlib.suppress(HypervisorError):
                await self._hv.abort_job(uid)
        elif decided.action is Action.SWITCH_TO_POST_COPY:
            log.info("%s: %s", key, decided.reason)
            with contextlib.suppress(HypervisorError):
                await self._hv.start_post_copy(uid)
                return migration.switched(decided.monitor)
        return decided.monitor

    async def _orphaned(self, key: str, job: MigrationJob) -> None:
        """A transfer this agent started before it restarted: libvirt's job went with the
        API call that drove it, so say how it ended as far as this host can tell."""
        namespace, name = key.split("/", 1)
        vm_obj = self._agent.bound_vm(f"{namespace}/{job.spec.vm}")
        report = Report(self._kube, namespace, name)
        if vm_obj is None:
            await report.transfer("Failed", "the source agent restarted during the transfer")
            return
        uid = vm_obj["metadata"]["uid"]
        with contextlib.suppress(HypervisorError):
            await self._hv.abort_job(uid)
        await report.transfer(
            "Failed", "the source agent restarted during the transfer; the VM stays here"
        )

    # -- what the agent asks --------------------------------------------------------------

    def migrating_to(self, vm_key: str) -> str | None:
        """The target host while this (source) agent transfers the VM, else None."""
        return self._migrating.get(vm_key)

    def moving_cold(self, vm_key: str) -> bool:
        """This (source) agent moves the VM cold (`migrating_to` says where)."""
        return vm_key in self._cold

    def is_incoming(self, uid: str) -> bool:
        """The VM migrates here: its domain is no stray."""
        return uid in self._incoming

    def incoming_uids(self) -> frozenset[str]:
        return frozenset(self._incoming)

    def bound_here(self, uid: str) -> None:
        """The agent's VM watch brought the VM: from here on that watch keeps it."""
        self._incoming.pop(uid, None)

    def is_departed(self, uid: str) -> bool:
        """This agent migrated the VM away, and its label has not moved yet."""
        return uid in self._departed

    def forget_departed(self, uid: str) -> bool:
        """Whether the VM had departed; it is forgotten now (the VM left this host)."""
        if uid not in self._departed:
            return False
        self._departed.discard(uid)
        return True


class Report:
    """The source agent's part of one job's status, applied whole each time."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self._kube = kube
        self.namespace = namespace
        self.name = name
        self.status: dict[str, Any] = {}

    async def transfer(self, state: str, message: str | None = None) -> None:
        self.status["transfer"] = {"state": state, **({"message": message} if message else {})}
        await self._apply()

    async def progress(self, progress: dict[str, Any], post_copy: bool) -> None:
        if self.status.get("progress") == progress:
            return
        self.status["progress"] = progress
        if post_copy:
            self.status.setdefault("transfer", {"state": "Running"})["postCopy"] = True
        await self._apply()

    async def _apply(self) -> None:
        await self._kube.apply_job_status(
            self.namespace, self.name, dict(self.status), manager=MIGRATION_SOURCE_MANAGER
        )
