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
- Source, when the job is Running: starts a live peer-to-peer migration with the job's
  options, samples libvirt's job statistics about once a second into `status.progress`,
  and lets `core.migration.judge` decide on timeouts (post-copy or abort) and cancels; the
  outcome goes to `status.transfer`. A VM that left is remembered, so its vanished domain is
  not mistaken for a guest that needs starting before the controller moves its label.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from kubevisor import metrics
from kubevisor.api import quantity
from kubevisor.api.migrationjob import MigrationJob
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core import migration
from kubevisor.core.domain import converter, document
from kubevisor.core.migration import Action, Watermark
from kubevisor.drivers.base import HypervisorError, MigrationAborted, MigrationRequest
from kubevisor.kube.client import Gone, Object, is_transient, retrying

if TYPE_CHECKING:
    from kubevisor.agent.agent import Agent

log = logging.getLogger("kubevisor.agent.migration")

SOURCE_LABEL = "kubevisor.io/migration-source"
TARGET_LABEL = "kubevisor.io/migration-target"
SOURCE_MANAGER = "kubevisor-agent-migration-source"
TARGET_MANAGER = "kubevisor-agent-migration-target"
PROGRESS_INTERVAL = 1.0  # seconds between progress samples (and writes)
FIRST_SAMPLE = 0.2  # seconds from the start to the first sample


def job_key(obj: Object) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


class Migrator:
    def __init__(self, agent: Agent, *, libvirt_uri: str, migrate_uri: str | None) -> None:
        self.agent = agent
        self.libvirt_uri = libvirt_uri
        self.migrate_uri = migrate_uri
        self.host = agent.settings.host
        self.jobs: dict[str, Object] = {}
        self.transfers: dict[str, asyncio.Task[None]] = {}
        self.finished: set[str] = set()
        """Jobs whose transfer this agent ran to its end (until the job is deleted)."""
        self.cancels: dict[str, asyncio.Event] = {}
        self.migrating: dict[str, str] = {}
        """VM key -> target host, while this (source) agent transfers it."""
        self.departed: set[str] = set()
        """uids of VMs this agent migrated away whose label has not moved yet."""
        self.incoming: dict[str, str] = {}
        """uid -> job key of VMs migrating here: their domains are not strays."""
        self._resource_versions: dict[str, str] = {}

    # -- watching -----------------------------------------------------------------------

    def selectors(self) -> list[str]:
        return [f"{SOURCE_LABEL}={self.host}", f"{TARGET_LABEL}={self.host}"]

    async def load(self) -> None:
        """List this host's jobs (before fencing: an incoming domain is not a stray)."""
        for selector in self.selectors():
            items, version = await retrying(
                "listing MigrationJobs", functools.partial(self._list, selector)
            )
            self._resource_versions[selector] = version
            for obj in items:
                self.jobs[job_key(obj)] = obj
                self._note_incoming(obj)

    async def _list(self, selector: str) -> tuple[list[Object], str]:
        return await self.agent.kube.list_jobs(label_selector=selector)

    def tasks(self) -> list[Coroutine[Any, Any, None]]:
        return [self._watch(selector) for selector in self.selectors()]

    async def start(self) -> None:
        """Act on the listed jobs (after the agent is ready); a transfer this host's agent
        started before it restarted is reported ended, only here."""
        for key in list(self.jobs):
            await self._handle(key, listed=True)

    async def _watch(self, selector: str) -> None:
        version = self._resource_versions[selector]
        while True:
            try:
                async for kind, obj in self.agent.kube.watch_jobs(
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
            self.jobs.pop(key, None)
            self.finished.discard(key)
            if key in self.cancels:
                self.cancels[key].set()
            await self._target_ended(obj)
            return
        self.jobs[key] = obj
        self._note_incoming(obj)
        try:
            await self._handle(key)
        except Exception:
            log.exception("%s: handling the MigrationJob failed", key)

    def _note_incoming(self, obj: Object) -> None:
        labels = obj["metadata"].get("labels") or {}
        uid = ((obj.get("status") or {}).get("targetAgent") or {}).get("vmUID")
        if labels.get(TARGET_LABEL) == self.host and uid:
            self.incoming[uid] = job_key(obj)

    async def _handle(self, key: str, *, listed: bool = False) -> None:
        obj = self.jobs[key]
        try:
            job = MigrationJob.model_validate(obj)
        except ValidationError as invalid:
            log.error("%s cannot be read: %s", key, invalid)
            return
        labels = obj["metadata"].get("labels") or {}
        status = job.status
        phase = status.phase if status is not None else None
        if labels.get(TARGET_LABEL) == self.host:
            if migration.is_terminal(phase):
                await self._target_ended(obj)
            elif phase == "Preparing" and (status is None or status.target_agent is None):
                await self._prepare(key, obj, job)
        if labels.get(SOURCE_LABEL) == self.host:
            stopping = job.spec.cancel or bool(obj["metadata"].get("deletionTimestamp"))
            if stopping and key in self.cancels:
                self.cancels[key].set()
            transfer = status.transfer if status is not None else None
            # A watch event may be older than this agent's own writes: a job whose transfer
            # it already ran is never started (or judged orphaned) again.
            if phase == "Running" and key not in self.transfers and key not in self.finished:
                if transfer is None:
                    self.cancels[key] = asyncio.Event()
                    if stopping:
                        self.cancels[key].set()
                    self.transfers[key] = asyncio.create_task(self._transfer(key, job))
                elif transfer.state == "Running" and listed:
                    await self._orphaned(key, job)

    # -- target ---------------------------------------------------------------------------

    async def _prepare(self, key: str, obj: Object, job: MigrationJob) -> None:
        namespace = obj["metadata"]["namespace"]
        written: dict[str, Any]
        try:
            vm_obj = await self.agent.kube.get_vm(namespace, job.spec.vm)
            if vm_obj is None:
                raise LookupError(f"VirtualMachine {job.spec.vm} is gone")
            uid = vm_obj["metadata"]["uid"]
            self.incoming[uid] = key
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
            await self.agent.refresh_shared()
            xml = converter.render(vm, host=await self.agent.environment(vm, uid))
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
        await self.agent.kube.apply_job_status(
            namespace, obj["metadata"]["name"], {"targetAgent": written}, manager=TARGET_MANAGER
        )

    async def _target_ended(self, obj: Object) -> None:
        """A job to this host ended: unless the VM is bound here now, nothing of it stays."""
        key = job_key(obj)
        status = obj.get("status") or {}
        uid = (status.get("targetAgent") or {}).get("vmUID")
        if not uid or self.incoming.get(uid) != key:
            return
        if status.get("phase") == "Succeeded":
            # The VM is bound here: it stays incoming (not fenced, files kept) until the VM
            # watch, which may lag this one, brings it in (Agent._remember).
            return
        del self.incoming[uid]
        if uid not in self.agent.keys_by_uid:
            await self.agent.remove_stray(uid)

    # -- source ---------------------------------------------------------------------------

    async def _transfer(self, key: str, job: MigrationJob) -> None:
        namespace, name = key.split("/", 1)
        vm_key = f"{namespace}/{job.spec.vm}"
        status = job.status
        assert status is not None and status.target is not None
        vm_obj = self.agent.vms.get(vm_key)
        report = Report(self.agent, namespace, name)
        try:
            if vm_obj is None:
                raise HypervisorError(f"VirtualMachine {job.spec.vm} is not bound to {self.host}")
            target = status.target_agent
            if target is None or not target.ready or not target.libvirt_uri:
                raise HypervisorError("the target has not published where to migrate to")
            uid = vm_obj["metadata"]["uid"]
            vm = VirtualMachine.model_validate(vm_obj)
            self.migrating[vm_key] = status.target
            self.agent.queue.add(vm_key)
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
            outcome = ("Cancelled" if self.cancels[key].is_set() else "Failed", str(aborted))
        except (HypervisorError, ValidationError) as error:
            outcome = ("Failed", str(error))
        finally:
            self.finished.add(key)
            self.migrating.pop(vm_key, None)
            self.transfers.pop(key, None)
            self.cancels.pop(key, None)
            self.agent.queue.add(vm_key)
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
        hv = self.agent.hv
        options = job.spec.options
        cancel = self.cancels[key]
        memory = quantity.to_bytes(vm.spec.memory.size)
        shared = self.agent.shared.path if self.agent.shared is not None else None
        source_xml = await hv.domain_xml(uid)
        disks = migration.disks_to_copy(source_xml, xml, shared)
        kept = sorted(set(migration.writable_disks(source_xml)) - set(disks))
        log.info("%s: copying disks %s, sharing %s", key, disks or "none", kept or "none")
        started = time.monotonic()
        move = asyncio.create_task(
            hv.migrate(
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
        watermark: Watermark | None = None
        moved = 0  # bytes processed in the latest sample, counted once the job ends
        post_copy = False
        aborted: str | None = None
        waker = asyncio.create_task(cancel.wait())
        try:
            while not move.done():
                # Sampled early at first: a small guest moves in about a second.
                interval = PROGRESS_INTERVAL if watermark and watermark.processed else FIRST_SAMPLE
                await asyncio.wait({move, waker}, timeout=interval, return_when="FIRST_COMPLETED")
                if move.done():
                    break
                stats = None
                with contextlib.suppress(HypervisorError):
                    stats = await hv.job_stats(uid)
                now = time.monotonic()
                if stats is not None:
                    moved = max(moved, stats.data_processed)
                    watermark = migration.track(watermark, stats, now=now)
                    post_copy = post_copy or stats.post_copy
                    await report.progress(migration.progress(stats).to_wire(), post_copy)
                verdict = migration.judge(
                    watermark,
                    started_at=started,
                    now=now,
                    options=options,
                    memory_bytes=memory,
                    post_copy_active=post_copy,
                    cancel_requested=cancel.is_set(),
                )
                if verdict.action is Action.ABORT and aborted is None:
                    aborted = verdict.reason
                    log.info("%s: aborting: %s", key, aborted)
                    with contextlib.suppress(HypervisorError):
                        await hv.abort_job(uid)
                elif verdict.action is Action.SWITCH_TO_POST_COPY and not post_copy:
                    log.info("%s: %s", key, verdict.reason)
                    with contextlib.suppress(HypervisorError):
                        await hv.start_post_copy(uid)
                        post_copy = True
            try:
                await move
            except MigrationAborted as error:
                raise MigrationAborted(aborted or str(error)) from error
        finally:
            waker.cancel()
            if not move.done():
                move.cancel()
            metrics.MIGRATION_BYTES.inc(moved)
        self.departed.add(uid)
        elapsed = time.monotonic() - started
        return "Succeeded", f"migrated in {elapsed:.1f}s" + (" (post-copy)" if post_copy else "")

    async def _orphaned(self, key: str, job: MigrationJob) -> None:
        """A transfer this agent started before it restarted: libvirt's job went with the
        API call that drove it, so say how it ended as far as this host can tell."""
        namespace, name = key.split("/", 1)
        vm_obj = self.agent.vms.get(f"{namespace}/{job.spec.vm}")
        report = Report(self.agent, namespace, name)
        if vm_obj is None:
            await report.transfer("Failed", "the source agent restarted during the transfer")
            return
        uid = vm_obj["metadata"]["uid"]
        with contextlib.suppress(HypervisorError):
            await self.agent.hv.abort_job(uid)
        await report.transfer(
            "Failed", "the source agent restarted during the transfer; the VM stays here"
        )

    # -- what the agent asks --------------------------------------------------------------

    def migrating_to(self, vm_key: str) -> str | None:
        return self.migrating.get(vm_key)

    def is_incoming(self, uid: str) -> bool:
        return uid in self.incoming


class Report:
    """The source agent's part of one job's status, applied whole each time."""

    def __init__(self, agent: Agent, namespace: str, name: str) -> None:
        self.agent = agent
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
        await self.agent.kube.apply_job_status(
            self.namespace, self.name, dict(self.status), manager=SOURCE_MANAGER
        )
