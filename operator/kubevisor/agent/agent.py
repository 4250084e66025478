"""The node agent: one per hypervisor host.

It registers its HypervisorHost, heartbeats through a Lease, watches only the VMs bound
to its host (label `kubevisor.io/host=NAME`, filtered by the API server), and converges
libvirt to them. Every trigger (a watch event, a libvirt lifecycle event, a reconnection,
the slow resync) only enqueues a VM key; one reconcile per key then reads the VM and the
domain as they are now, asks `core.convergence` what to do and `core.status` what to
report, acts, and writes status only when it changed.

A disk whose `source` image this host lacks is downloaded before the domain is defined:
the download runs in the background (`ImageCache`), the VM shows its progress (phase
Starting, ImagePulling) and is reconciled again every second until the image is cached;
a failed download is reported with its reason and retried with the work queue's back-off,
or stalls the VM when no retry can help. Unused images are evicted by age and size on the
resync and whenever a VM's files are removed.

Before it heartbeats for the first time, the agent fences: every domain carrying kubevisor
metadata whose VM no longer exists, has another uid, or is bound elsewhere is destroyed
and removed, so a host that comes back after being declared lost never runs a VM twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kubevisor import metrics
from kubevisor.agent import hoststatus, probe
from kubevisor.agent.imagecache import ImageCache, ImagePullError, Pull
from kubevisor.agent.migration import Migrator
from kubevisor.agent.vmfiles import ImageRejected, VmFiles
from kubevisor.agent.workqueue import WorkQueue
from kubevisor.api import quantity
from kubevisor.api.conditions import Condition
from kubevisor.api.hypervisorhost import SharedStorage, SharedStorageStatus
from kubevisor.api.virtualmachine import ImageSource, VirtualMachine
from kubevisor.core import convergence, destinations, status
from kubevisor.core.convergence import Action, DomainObservation, DomainState
from kubevisor.core.domain import converter, document, identity
from kubevisor.core.domain.host import BootFiles, DomainType, HostEnvironment, Ovmf, shared_cpus
from kubevisor.core.eviction import CachedFile
from kubevisor.core.imagepulls import ImagePullState, PullFailure
from kubevisor.core.status import AgentError
from kubevisor.drivers.base import (
    ConnectionEvent,
    DomainEvent,
    DomainNotFound,
    Hypervisor,
    HypervisorError,
    PermanentError,
    RetryableError,
)
from kubevisor.kube.client import Gone, Kube, Object, is_not_found, is_transient, retrying

log = logging.getLogger("kubevisor.agent")

HOST_LABEL = "kubevisor.io/host"
COMPONENT = "kubevisor-agent"
PULL_PROGRESS_INTERVAL = 1.0
"""Seconds between reconciles of a VM whose image downloads, so its status shows progress."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Read once at start-up (from the command line) and passed down as a value."""

    host: str
    domain_type: DomainType
    state_dir: Path
    domain_type_message: str | None = None
    """Why the agent runs `domain_type` and not a faster type the host offers (KVM)."""
    image_dir: Path
    default_boot: BootFiles | None = None
    cgroup_controllers: frozenset[str] | None = None
    """cgroup controllers libvirt uses for VMs on this host (qemu.conf); None: unknown."""
    qemu_conf: Path | None = None
    """The host's qemu.conf, read for what libvirt does not report (seccomp_sandbox)."""
    lease_namespace: str = "kubevisor-system"
    lease_duration: int = 40
    shutdown_grace: float = 30.0
    resync_interval: float = 300.0
    workers: int = 4
    migration_uri: str | None = None
    """libvirt URI other hosts' libvirtd reach this one at (default: the agent's own)."""
    migrate_uri: str | None = None
    """Where this host's QEMU receives migrations, e.g. tcp://10.0.0.2 (default: libvirt's)."""
    console_endpoint: str | None = None
    """URL of this agent's serial console endpoint (status.consoleEndpoint); None: off."""
    image_cache_max_bytes: int = 50 << 30
    """Unused cached images are evicted, oldest last use first, while the cache is larger."""
    image_cache_max_unused: float = 86400.0
    """Seconds after its last use an unused cached image is evicted."""
    image_sources: destinations.Policy = dataclasses.field(default_factory=destinations.Policy)
    """Where image downloads may connect, and the largest image accepted."""


class Agent:
    def __init__(
        self,
        *,
        settings: Settings,
        kube: Kube,
        hypervisor: Hypervisor,
        libvirt_uri: str = "qemu:///system",
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.hv = hypervisor
        # A leading dot: no image name (which starts alphanumeric) can collide with it.
        self.images = ImageCache(
            settings.image_dir / ".cache", policy=settings.image_sources, on_done=self._image_done
        )
        self.files = VmFiles(
            state_dir=settings.state_dir,
            image_dir=settings.image_dir,
            images=self.images,
            on_remove=self._files_removed,
            on_use=self._image_used,
        )
        self.queue = WorkQueue()
        self.vms: dict[str, Object] = {}
        """The VMs bound to this host, by namespace/name, as the watch last delivered them."""
        self.uids: dict[str, str] = {}
        """Last known uid per key, kept after deletion until the domain is gone."""
        self.keys_by_uid: dict[str, str] = {}
        self.written: dict[str, dict[str, Any]] = {}
        """The last status applied per key: skips writes the watch has not echoed yet."""
        self.host_written: dict[str, Any] | None = None
        self.shared: SharedStorage | None = None
        """The host's spec.sharedStorage, as last read."""
        self.shared_cpus: frozenset[int] | None = None
        """The CPUs its spec gives shared VMs (`domain.host.shared_cpus`), as last read."""
        self._host_generation: int | None = None
        """metadata.generation of the host spec the last registration read."""
        self.pull_failures_reported: dict[str, dict[str, tuple[int, int]]] = {}
        """Per key, per digest: (attempt, metadata.generation) of the failed download its
        status reported, so its next reconcile (after the back-off) tries a new one."""
        self.cache_changed = asyncio.Event()
        """Set when a download ended or a VM's files went: evict, then report the cache."""
        self.ready = asyncio.Event()
        self._fencing: asyncio.Task[None] | None = None
        self._selector = f"{HOST_LABEL}={settings.host}"
        self.migrator = Migrator(
            self,
            libvirt_uri=settings.migration_uri or libvirt_uri,
            migrate_uri=settings.migrate_uri,
        )

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        await self.hv.connect()
        events = self.hv.events()
        resource_version = await retrying("listing VMs", self._list)
        await self.migrator.load()
        await self._fence()
        await retrying("registering the host", self.register_host)
        await retrying("renewing the Lease", self._renew_lease)
        self.ready.set()
        log.info("agent for host %s is ready with %d VMs", self.settings.host, len(self.vms))
        tasks = [
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._watch(resource_version), name="watch"),
            asyncio.create_task(self._hypervisor_events(events), name="libvirt-events"),
            asyncio.create_task(self._resync(), name="resync"),
            asyncio.create_task(self._tend_image_cache(), name="image-cache"),
            *(asyncio.create_task(watch, name="jobs") for watch in self.migrator.tasks()),
            *(
                asyncio.create_task(self._worker(), name=f"worker-{n}")
                for n in range(self.settings.workers)
            ),
        ]
        for key in self.vms:
            self.queue.add(key)
        await self.migrator.start()
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _list(self) -> str:
        items, resource_version = await self.kube.list_vms(label_selector=self._selector)
        self.vms = {}
        for obj in items:
            self._remember(obj)
        return resource_version

    def _remember(self, obj: Object) -> str:
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        self.vms[key] = obj
        old = self.uids.get(key)
        if old is not None and old != meta["uid"]:
            # Same name, new object: the old domain is a stray now.
            self.keys_by_uid.pop(old, None)
        self.uids[key] = meta["uid"]
        self.keys_by_uid[meta["uid"]] = key
        # A VM migrated here is bound now: from here on its own watch keeps it.
        self.migrator.incoming.pop(meta["uid"], None)
        return key

    async def _watch(self, resource_version: str) -> None:
        while True:
            try:
                async for kind, obj in self.kube.watch_vms(
                    label_selector=self._selector, resource_version=resource_version
                ):
                    resource_version = obj["metadata"]["resourceVersion"]
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        meta = obj["metadata"]
                        key = f"{meta['namespace']}/{meta['name']}"
                        self.vms.pop(key, None)
                        self.written.pop(key, None)
                    else:
                        key = self._remember(obj)
                    # The object is fresher than anything this agent wrote before it.
                    self.written.pop(key, None)
                    self.queue.add(key)
            except Gone:
                log.info("watch expired; listing VMs again")
                before = set(self.vms)
                resource_version = await retrying("listing VMs", self._list)
                for key in before | set(self.vms):
                    self.queue.add(key)
            except Exception as error:
                if not is_transient(error):
                    raise
                log.warning("watch broke (%s); watching again", error)
                await asyncio.sleep(1.0)

    async def _hypervisor_events(self, events: Any) -> None:
        async for event in events:
            if isinstance(event, ConnectionEvent):
                log.info("libvirt %s: %s", "connected" if event.connected else "lost", event.reason)
                if event.connected:
                    await self._resync_once()
            elif isinstance(event, DomainEvent):
                key = self.keys_by_uid.get(event.uuid)
                if key is not None:
                    self.queue.add(key)
                elif self._fencing is None or self._fencing.done():
                    # A domain no VM of this host owns appeared or changed: check it now.
                    self._fencing = asyncio.create_task(self._fence_logged())

    async def _renew_lease(self) -> None:
        await self.kube.renew_lease(
            namespace=self.settings.lease_namespace,
            name=self.settings.host,
            duration=self.settings.lease_duration,
        )

    async def _heartbeat(self) -> None:
        interval = self.settings.lease_duration / 4
        while True:
            await asyncio.sleep(interval)
            try:
                await self._renew_lease()
            except Exception:
                log.exception("could not renew the Lease of host %s", self.settings.host)
            try:
                await self._follow_host_spec()
            except Exception:
                log.exception("could not read the HypervisorHost %s", self.settings.host)

    async def _follow_host_spec(self) -> None:
        """Register again when an admin changed the host's spec (PCI allow-list, shared
        storage): polled with the heartbeat, one GET, as the agent may not watch hosts."""
        host = await self.kube.get_host(self.settings.host)
        if ((host or {}).get("metadata") or {}).get("generation") != self._host_generation:
            await self.register_host()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_interval)
            await self._resync_once()

    async def _resync_once(self) -> None:
        try:
            await self._fence()
            self.evict_images()
            await self.register_host()
        except HypervisorError as error:
            log.warning("resync postponed: %s", error)
        for key in list(self.vms):
            self.queue.add(key)

    async def _worker(self) -> None:
        """Reconcile keys from the queue; `run` starts `settings.workers` of these.

        A failed reconcile backs its key off (`WorkQueue.retry`: 1 s doubling to 60 s, or
        the error's own delay when longer; a success resets it). Until the hold ends the
        key is reconciled only when what it asks for changed: another object under the
        name, a spec change (metadata.generation), deletion, the controller's word in status
        (unbinding, eviction), or a migration starting or ending. The triggers a failed
        attempt causes itself (libvirt's lifecycle events of the define and the failed
        start, the watch echoing the status just written) are skipped: each of them used to
        retry the key at once, some ten times a second however long the error asked to wait.
        """
        while True:
            key = await self.queue.get()
            obj = self.vms.get(key) or {}
            meta, current = obj.get("metadata") or {}, obj.get("status") or {}
            request = (
                meta.get("uid"),
                meta.get("generation"),
                meta.get("deletionTimestamp"),
                current.get("host"),
                current.get("eviction"),
                self.migrator.migrating_to(key),
            )
            try:
                if not self.queue.due(key, request):
                    continue
                with metrics.timed(metrics.RECONCILE_DURATION, "agent-vm"):
                    await self.reconcile(key)
                self.queue.forget(key)
            except HypervisorError as error:
                # Retryable (reconcile has reported it), or permanent where reconcile could not
                # report it, e.g. while observing the domain.
                metrics.RECONCILE_ERRORS.labels("agent-vm").inc()
                at_least = error.delay if isinstance(error, RetryableError) else 0.0
                delay = self.queue.retry(key, request=request, at_least=at_least)
                log.info("%s: will retry in %.0fs: %s", key, delay, error)
            except Exception as error:
                if is_not_found(error):
                    # Deleted while reconciling; the watch's DELETED event comes next.
                    log.info("%s: gone while reconciling", key)
                    continue
                metrics.RECONCILE_ERRORS.labels("agent-vm").inc()
                delay = self.queue.retry(key, request=request)
                log.exception("%s: reconcile failed; will retry in %.0fs", key, delay)
            finally:
                self.queue.done(key)

    # -- host ----------------------------------------------------------------------------

    async def register_host(self) -> None:
        """Create the HypervisorHost if missing and apply its facts when they changed."""
        facts = await self.hv.host_facts()
        self.settings.image_dir.mkdir(parents=True, exist_ok=True)
        disk = facts.disk_bytes or shutil.disk_usage(self.settings.image_dir).total
        ksm = probe.ksm()
        if ksm is not None:
            metrics.KSM_PAGES_SHARED.set(ksm.pages_shared or 0)
            metrics.KSM_PAGES_SHARING.set(ksm.pages_sharing or 0)
            metrics.KSM_RUNNING.set(1 if ksm.running else 0)
        # The allow-list and shared storage may change at any time: read them every time.
        host = await self.kube.get_host(self.settings.host)
        rules = probe.pci_rules(host)
        self._read_shared(host)
        self._host_generation = ((host or {}).get("metadata") or {}).get("generation")
        wanted = hoststatus.host_status(
            facts,
            domain_type=self.settings.domain_type,
            domain_type_message=self.settings.domain_type_message,
            disk_bytes=disk,
            ksm=ksm,
            storage=probe.storage(
                disk_root=self.settings.state_dir / "vms",
                virtual_bytes=self._provisioned(),
                image_cache_bytes=self.images.usage(),
            ),
            images=hoststatus.cached_images(self.images.entries(), self.files.images_in_use()),
            capabilities=probe.capabilities(
                Ovmf(),
                security_models=facts.security_models,
                cgroup_controllers=self.settings.cgroup_controllers,
                qemu_conf=self.settings.qemu_conf,
                containers=self.settings.domain_type == "lxc",
            ),
            pci_devices=probe.pci_inventory(rules, await self.hv.pci_devices()) if rules else [],
        )
        if self.settings.console_endpoint:
            wanted["consoleEndpoint"] = self.settings.console_endpoint
        if self.shared is not None:
            wanted.setdefault("storage", {})["shared"] = _shared_status(self.shared).to_wire()
        if self.host_written is None:
            current = await self.kube.get_host(self.settings.host)
            if current is None:
                await self.kube.create_host(self.settings.host, labels={})
                current = {}
            existing = current.get("status") or {}
            self.host_written = {k: existing.get(k) for k in wanted}
        if self.host_written != wanted:
            await self.kube.apply_host_status(self.settings.host, wanted)
            self.host_written = wanted

    async def refresh_shared(self) -> None:
        """Read the host's shared storage and CPUs now: the heartbeat's reading may be
        seconds old."""
        self._read_shared(await self.kube.get_host(self.settings.host))

    def _read_shared(self, host: Object | None) -> None:
        spec = (host or {}).get("spec") or {}
        try:
            self.shared_cpus = shared_cpus(
                cpu_shared_set=spec.get("cpuSharedSet"),
                cpu_dedicated_set=spec.get("cpuDedicatedSet"),
            )
        except ValueError as invalid:
            log.error("ignoring the host's spec.cpuSharedSet: %s", invalid)
            self.shared_cpus = None
        raw = spec.get("sharedStorage")
        try:
            shared = SharedStorage.model_validate(raw) if raw else None
        except ValidationError as invalid:
            log.error("ignoring the host's spec.sharedStorage: %s", invalid)
            shared = None
        if shared != self.shared:
            log.info("shared storage of host %s: %s", self.settings.host, shared)
        self.shared = shared

    # -- image cache ---------------------------------------------------------------------

    def _image_done(self, sha256: str) -> None:
        """A download ended (ImageCache.on_done): the VMs waiting for it go on."""
        for key, obj in self.vms.items():
            if sha256 in _source_digests(obj):
                self.queue.add(key)
        self.cache_changed.set()

    def _files_removed(self, uid: str) -> None:
        """VmFiles.on_remove: the VM's images may be unused now."""
        self.cache_changed.set()

    def _image_used(self, sha256: str) -> None:
        """VmFiles.on_use: one more disk here uses the image; the host's status says how
        many (an image already cached ends no download that would report it)."""
        self.cache_changed.set()

    async def _tend_image_cache(self) -> None:
        """Evict and report the cache whenever a download ends or a VM's files go."""
        while True:
            await self.cache_changed.wait()
            self.cache_changed.clear()
            try:
                self.evict_images()
                await self.register_host()
            except Exception as error:
                # The resync evicts and registers again; nothing here may stop the agent.
                log.warning("could not evict or report the image cache: %s", error)

    def evict_images(self) -> list[CachedFile]:
        """Evict the cached images no overlay here is backed by and no bound VM wants, by
        the age and size limits of the settings."""
        keep = set(self.files.images_in_use())
        for obj in self.vms.values():
            keep |= _source_digests(obj)
        return self.images.evict(
            keep=keep,
            now=time.time(),
            max_bytes=self.settings.image_cache_max_bytes,
            max_unused=self.settings.image_cache_max_unused,
        )

    def _pull_images(
        self, key: str, vm: VirtualMachine, uid: str, generation: int
    ) -> tuple[tuple[ImagePullState, ...], PullFailure | None]:
        """The disks whose images this host lacks, with their downloads started or
        followed, and the failure to raise (after writing status) if one failed: the first
        permanent one, else the first.

        A failed download is reported once per attempt; the key's next reconcile, after the
        back-off, starts a new attempt. A permanent failure is tried again only for a new
        spec (metadata.generation).
        """
        reported = self.pull_failures_reported.setdefault(key, {})
        cache = self.files.image_cache(vm, uid, self.shared)
        sources = [(disk.name, disk.source) for disk in vm.spec.disks if disk.source is not None]
        pulls: dict[str, Pull | None] = {}
        for _, source in sources:
            if source.sha256 not in pulls:
                pulls[source.sha256] = self._pull_image(cache, source, reported, generation)
        states = []
        for disk, source in sources:
            pull = pulls[source.sha256]
            if pull is None:
                continue
            failure = None
            if pull.error is not None:
                reported[source.sha256] = (pull.attempts, generation)
                failure = self._pull_failure(key, pull.error, attempts=pull.attempts)
            states.append(
                ImagePullState(
                    disk=disk,
                    url=pull.url,
                    received_bytes=pull.received_bytes,
                    total_bytes=pull.total_bytes,
                    attempts=pull.attempts,
                    failure=failure,
                )
            )
        if not states:
            del self.pull_failures_reported[key]
        failures = [state.failure for state in states if state.failure is not None]
        failures.sort(key=lambda failure: not failure.permanent)
        return tuple(states), failures[0] if failures else None

    def _pull_image(
        self,
        cache: ImageCache,
        source: ImageSource,
        reported: dict[str, tuple[int, int]],
        generation: int,
    ) -> Pull | None:
        """The image's download (None: cached), a new attempt if the last one failed and
        this VM has reported that failure already."""
        pull = cache.pull(source.url, source.sha256, source.compression)
        if pull is None or pull.error is None:
            return pull
        seen = reported.get(source.sha256)
        if seen is None or seen[0] != pull.attempts:
            return pull
        if isinstance(pull.error, PermanentError) and seen[1] == generation:
            return pull
        return cache.pull(source.url, source.sha256, source.compression, retry=True)

    def _pull_failure(self, key: str, error: ImagePullError, *, attempts: int) -> PullFailure:
        if isinstance(error, PermanentError):
            return PullFailure(permanent=True, reason=error.reason, message=str(error))
        # Backing off by the image's attempts, not the key's failures: the reconcile that
        # starts the next attempt succeeds, and a success resets the key's count.
        delay = self.queue.backoff(attempts - 1)
        return PullFailure(
            permanent=False,
            reason=error.reason,
            message=str(error),
            # What the worker's `queue.retry` will hold the key for once this is raised.
            retry_in=self.queue.next_delay(key, at_least=delay),
        )

    def _provisioned(self) -> int:
        """Virtual bytes of the disks of the VMs bound here (what disk ratios count)."""
        total = 0
        for obj in self.vms.values():
            for disk in (obj.get("spec") or {}).get("disks") or []:
                if disk.get("size"):
                    total += quantity.to_bytes(str(disk["size"]))
        return total

    # -- fencing -------------------------------------------------------------------------

    async def _fence(self) -> None:
        """Destroy and remove every kubevisor domain that is not bound to this host."""
        with metrics.timed(metrics.LIBVIRT_CALL_DURATION, "list"):
            domains = await self.hv.list_domains()
        states = Counter(info.state.value for info in domains)
        for state in DomainState:
            metrics.DOMAINS.labels(state.value).set(states.get(state.value, 0))
        for info in domains:
            key = self.keys_by_uid.get(info.uuid)
            if key is not None and key in self.vms:
                continue
            try:
                ref = identity.read_metadata(await self.hv.domain_xml(info.uuid))
            except DomainNotFound:
                continue
            if ref is None:
                continue  # not ours: leave the operator's own domains alone
            if not await self._stray(info.uuid, ref):
                continue
            log.warning(
                "fencing domain %s of VM %s/%s: not bound to host %s",
                info.name,
                ref.namespace,
                ref.name,
                self.settings.host,
            )
            await self._remove(info.uuid)
            with contextlib.suppress(Exception):
                await self.kube.event(
                    involved={
                        "kind": "VirtualMachine",
                        "metadata": {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid},
                    },
                    type_="Warning",
                    reason="Fenced",
                    message=f"host {self.settings.host} destroyed its domain {info.name}: "
                    "the VM is not bound to this host",
                    component=COMPONENT,
                )
        # Files of VMs whose domains are gone (e.g. removed while the agent was down).
        for uid in self.files.known_uids() - set(self.keys_by_uid) - set(self.migrator.incoming):
            self.files.remove(uid)

    async def _stray(self, uid: str, ref: identity.VmRef) -> bool:
        """Whether a domain no watched VM owns is really nobody's here, asked of the API
        server itself: this agent's watches may lag (a VM migrated here is bound by a
        status write and a label patch this agent may not have seen yet)."""
        if self.migrator.is_incoming(uid):
            return False
        try:
            live = await self.kube.get_vm(ref.namespace, ref.name)
        except Exception as error:
            log.warning("not fencing %s now: cannot read its VM: %s", uid, error)
            return False
        if live is None or live["metadata"].get("uid") != uid:
            return True
        return (live.get("status") or {}).get("host") != self.settings.host

    async def remove_stray(self, uid: str) -> None:
        """Destroy and remove a domain and its files that nothing binds here."""
        with contextlib.suppress(DomainNotFound):
            await self.hv.destroy(uid)
        await self._remove(uid)

    async def _fence_logged(self) -> None:
        try:
            await self._fence()
        except HypervisorError as error:
            log.warning("fencing postponed: %s", error)

    async def _remove(self, uid: str, *, shared: SharedStorage | None = None) -> None:
        with contextlib.suppress(DomainNotFound):
            await self.hv.undefine(uid)
        self.files.remove(uid, shared=shared)

    # -- reconcile -----------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        obj = self.vms.get(key)
        uid = self.uids.get(key)
        if obj is None:
            # Deleted, or bound to another host now: nothing of it may stay here.
            self.pull_failures_reported.pop(key, None)
            if uid is not None:
                if uid in self.migrator.departed:
                    self.migrator.departed.discard(uid)
                    self.files.remove(uid)
                else:
                    await self._shutdown_and_remove(uid)
                self.uids.pop(key, None)
                self.keys_by_uid.pop(uid, None)
            return
        assert uid is not None
        meta = obj["metadata"]
        current = obj.get("status") or {}
        if uid in self.migrator.departed or current.get("host") != self.settings.host:
            # Migrated away or being unbound: the controller writes status.host before the
            # label, so the label may still say this host. Nothing of it to start here.
            return
        try:
            vm = VirtualMachine.model_validate(obj)
        except ValidationError as invalid:
            await self._write_invalid(key, obj, invalid)
            return
        # Read before observing: a transfer that ends during `_observe` leaves the domain
        # gone and the uid in `departed`, which is checked again below.
        migrating_to = self.migrator.migrating_to(key)
        observed = await self._observe(uid)
        if uid in self.migrator.departed:
            return
        deleting = bool(meta.get("deletionTimestamp"))
        eviction = current.get("eviction") or {}
        evicting = eviction.get("reason") if eviction.get("host") == self.settings.host else None
        plan = convergence.plan(
            run_strategy=vm.spec.run_strategy,
            paused=vm.spec.paused,
            # Evicted: shut down gracefully and removed, as for a deletion; the controller
            # then places the VM again elsewhere.
            deleting=deleting or evicting is not None,
            domain=observed,
        )
        if migrating_to is not None and not deleting:
            # libvirt pauses and finally removes the domain as it moves: none of that is
            # something to correct. Deleting the VM still wins (it aborts the transfer).
            plan = dataclasses.replace(plan, actions=(), restart=False)
        pulls: tuple[ImagePullState, ...] = ()
        pull_failed: PullFailure | None = None
        if Action.DEFINE_AND_START in plan.actions:
            generation = int(meta.get("generation", 0))
            # Where the images go and the overlays will be depends on the host's shared
            # storage: read once here, for the pulls and `environment` alike.
            await self.refresh_shared()
            pulls, pull_failed = self._pull_images(key, vm, uid, generation)
            if pulls:
                # Not yet: the overlays need the images; a finished download re-queues us.
                plan = dataclasses.replace(plan, actions=(), restart=False)
        restart_count = int(current.get("restartCount") or 0)
        error: AgentError | None = None
        retry: RetryableError | None = None
        try:
            for action in plan.actions:
                await self._act(action, vm, uid)
            if plan.restart:
                restart_count += 1
        except RetryableError as failed:
            error = AgentError(permanent=False, reason="HypervisorBusy", message=str(failed))
            retry = failed
        except PermanentError as failed:
            reason = failed.reason if isinstance(failed, ImageRejected) else "DomainRejected"
            error = AgentError(permanent=True, reason=reason, message=str(failed))
        if plan.actions:
            observed = await self._observe(uid)
        await self._write_status(
            key,
            obj,
            vm,
            observed=observed,
            deleting=deleting,
            error=error,
            restart_count=restart_count,
            migrating_to=migrating_to,
            evicting=evicting,
            pulls=pulls,
        )
        if pull_failed is not None and pull_failed.permanent:
            raise PermanentError(pull_failed.message)
        if pull_failed is not None:
            raise RetryableError(pull_failed.message, delay=pull_failed.retry_in or 0.0)
        if pulls:
            self.queue.add_after(key, PULL_PROGRESS_INTERVAL)
        if retry is not None:
            raise retry
        if error is not None:
            # Reported above; raised so the worker backs off before trying again.
            raise PermanentError(error.message)

    async def _observe(self, uid: str) -> DomainObservation | None:
        try:
            with metrics.timed(metrics.LIBVIRT_CALL_DURATION, "state"):
                info = await self.hv.state(uid)
        except DomainNotFound:
            return None
        hardware = ""
        if info.state.value not in ("shutoff", "crashed"):
            with contextlib.suppress(DomainNotFound):
                ref = identity.read_metadata(await self.hv.domain_xml(uid))
                hardware = ref.hardware if ref is not None else ""
        return DomainObservation(
            uuid=info.uuid,
            state=info.state,
            reason=info.reason,
            hardware=hardware,
        )

    async def _act(self, action: Action, vm: VirtualMachine, uid: str) -> None:
        log.info("%s/%s: %s", vm.metadata.get("namespace"), vm.metadata.get("name"), action)
        with metrics.timed(metrics.LIBVIRT_CALL_DURATION, action.value):
            await self._perform(action, vm, uid)

    async def _perform(self, action: Action, vm: VirtualMachine, uid: str) -> None:
        if action is Action.DEFINE_AND_START:
            try:
                xml = converter.render(vm, host=await self.environment(vm, uid))
            except document.DomainError as invalid:
                raise PermanentError(str(invalid)) from invalid
            await self.hv.define(xml)
            await self.hv.start(uid)
        elif action is Action.SHUTDOWN:
            await self.hv.shutdown(uid, timeout=self.settings.shutdown_grace)
        elif action is Action.DESTROY:
            await self.hv.destroy(uid)
        elif action is Action.SUSPEND:
            await self.hv.suspend(uid)
        elif action is Action.RESUME:
            await self.hv.resume(uid)
        elif action is Action.REMOVE:
            # Shared overlays go only with the VM itself: evicted, it runs on elsewhere.
            deleted = bool(vm.metadata.get("deletionTimestamp"))
            await self._remove(uid, shared=self.shared if deleted else None)

    async def environment(self, vm: VirtualMachine, uid: str) -> HostEnvironment:
        """This host as the domain XML needs it, with the VM's files created here."""
        files = await self.files.prepare(vm, uid, shared=self.shared)
        return HostEnvironment(
            domain_type=self.settings.domain_type,
            disk_paths=files.disk_paths,
            seed_iso=files.seed_iso,
            serial_log=files.serial_log,
            default_boot=self.settings.default_boot,
            nvram=str(self.files.directory(uid) / "nvram.fd"),
            vhost_net=probe.VHOST_NET.exists(),
            cgroup_controllers=self.settings.cgroup_controllers,
            shared_cpus=self.shared_cpus,
        )

    async def _shutdown_and_remove(self, uid: str) -> None:
        try:
            info = await self.hv.state(uid)
        except DomainNotFound:
            self.files.remove(uid)
            return
        if info.state.value not in ("shutoff", "crashed"):
            await self.hv.shutdown(uid, timeout=self.settings.shutdown_grace)
        await self._remove(uid)

    # -- status --------------------------------------------------------------------------

    async def _write_status(
        self,
        key: str,
        obj: Object,
        vm: VirtualMachine,
        *,
        observed: DomainObservation | None,
        deleting: bool,
        error: AgentError | None,
        restart_count: int,
        migrating_to: str | None = None,
        evicting: str | None = None,
        pulls: tuple[ImagePullState, ...] = (),
    ) -> None:
        current = obj.get("status") or {}
        previous = [Condition.model_validate(c) for c in current.get("conditions") or []]
        # Only the facts `unenforced_limits` reads: `environment` would create the VM's files.
        limits = HostEnvironment(
            domain_type=self.settings.domain_type,
            cgroup_controllers=self.settings.cgroup_controllers,
        )
        wanted = status.bound_vm_status(
            status.Inputs(
                spec=vm.spec,
                generation=int(obj["metadata"].get("generation", 0)),
                deleting=deleting,
                domain=observed,
                hardware=identity.hardware_fingerprint(vm.spec),
                error=error,
                migrating_to=migrating_to,
                evicting=evicting,
                unenforced=tuple(converter.unenforced_limits(vm, limits)),
                pulls=pulls,
            ),
            previous_phase=current.get("phase"),
            previous=previous,
            restart_count=restart_count,
            now=datetime.datetime.now(datetime.UTC).replace(microsecond=0),
        )
        storage = self.files.storage(obj["metadata"]["uid"], self.shared)
        if storage is not None:
            wanted["storage"] = {**storage.to_wire(), "host": self.settings.host}
        if not status.differs(current, wanted) or self.written.get(key) == wanted:
            return
        meta = obj["metadata"]
        await self.kube.apply_vm_status(meta["namespace"], meta["name"], wanted)
        self.written[key] = wanted

    async def _write_invalid(self, key: str, obj: Object, invalid: ValidationError) -> None:
        """A VM the API server accepted but this agent cannot read: say so, never crash."""
        message = f"the agent cannot read this VM: {invalid.errors()[0].get('msg', invalid)}"
        wanted = {
            "phase": "Failed",
            "observedGeneration": int(obj["metadata"].get("generation", 0)),
            "conditions": [
                {
                    "type": "Stalled",
                    "status": "True",
                    "reason": "InvalidSpec",
                    "message": message,
                    "lastTransitionTime": _now(),
                },
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "InvalidSpec",
                    "message": message,
                    "lastTransitionTime": _now(),
                },
            ],
        }
        if self.written.get(key, {}).get("conditions", [{}])[0].get("message") == message:
            return
        meta = obj["metadata"]
        await self.kube.apply_vm_status(meta["namespace"], meta["name"], wanted)
        self.written[key] = wanted


def _shared_status(shared: SharedStorage) -> SharedStorageStatus:
    """The shared storage as this host sees it: size and free space when it is mounted."""
    try:
        usage = shutil.disk_usage(shared.path)
    except OSError:
        return SharedStorageStatus(name=shared.name, path=shared.path)
    return SharedStorageStatus(
        name=shared.name,
        path=shared.path,
        capacity=quantity.format_bytes(usage.total),
        available=quantity.format_bytes(usage.free),
    )


def _source_digests(obj: Object) -> set[str]:
    """The digests of a VM's disk images from URLs, read from the object as it is."""
    disks = (obj.get("spec") or {}).get("disks") or []
    return {str(d["source"]["sha256"]) for d in disks if (d.get("source") or {}).get("sha256")}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
