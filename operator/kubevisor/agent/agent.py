"""The node agent: one per hypervisor host.

It registers its HypervisorHost, heartbeats through a Lease, watches only the VMs bound
to its host (label `kubevisor.io/host=NAME`, filtered by the API server), and converges
the hypervisor to them. Every trigger (a watch event, a libvirt lifecycle event, a
reconnection, the slow resync) only enqueues a VM key; one reconcile per key then reads the
VM and the domain as they are now, decides, acts, and writes status only when it changed.

`Agent` wires the parts and runs their tasks; each part lives in its own module:

- `vms.BoundVms`: the VMs bound here, as the watch (here) last delivered them;
- `reconciler.Reconciler`: one reconcile of one VM;
- `registration.HostRegistration`: the HypervisorHost, the Lease heartbeat and the host's
  shared storage;
- `fencing.Fencer`: no domain runs here for a VM bound elsewhere (before the first
  heartbeat, then on every resync);
- `selffence.SelfFence`: a host whose Lease was not renewed in time stops its guests;
- `pulls.ImagePulls`: disk image downloads and the image cache's eviction;
- `migration.Migrator`: this host's half of live migrations, which reaches the agent only
  through its `AgentPort` (implemented here);
- `network.HostNetworking`: the host's bridges, VXLAN devices, DHCP servers and port rules
  for the VMs here (realised before a domain starts or a migration comes in).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubevisor import metrics
from kubevisor.agent import sdnotify
from kubevisor.agent.fencing import Fencer
from kubevisor.agent.imagecache import ImageCache
from kubevisor.agent.migration import Migrator
from kubevisor.agent.network import HostNetworking
from kubevisor.agent.pulls import ImagePulls
from kubevisor.agent.reconciler import Reconciler
from kubevisor.agent.registration import HostRegistration
from kubevisor.agent.selffence import SelfFence
from kubevisor.agent.settings import Settings
from kubevisor.agent.snapshots import Snapshotter
from kubevisor.agent.vmfiles import VmFiles
from kubevisor.agent.vms import BoundVms, key_of
from kubevisor.agent.workqueue import WorkQueue
from kubevisor.api.hypervisorhost import SharedStorage
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.api.wire import HOST_LABEL
from kubevisor.core.domain.host import HostEnvironment
from kubevisor.core.network.hostinputs import HostSide
from kubevisor.drivers.base import (
    ConnectionEvent,
    DomainEvent,
    Hypervisor,
    HypervisorError,
    RetryableError,
)
from kubevisor.drivers.hostnet.base import HostNetwork
from kubevisor.kube.client import Kube, Object
from kubevisor.kube.errors import Gone, is_not_found, is_transient, retrying
from kubevisor.kube.snapshots import SnapshotApi

__all__ = ["Agent", "Settings"]

log = logging.getLogger("kubevisor.agent")


class Agent:
    def __init__(
        self,
        *,
        settings: Settings,
        kube: Kube,
        hypervisor: Hypervisor,
        libvirt_uri: str = "qemu:///system",
        queue: WorkQueue | None = None,
        host_network: HostNetwork | None = None,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.hv = hypervisor
        self.queue = queue if queue is not None else WorkQueue()
        self.vms = BoundVms()
        self.networking = HostNetworking(
            side=HostSide(
                host=settings.host,
                tunnel_ip=settings.tunnel_ip,
                underlay_mtu=settings.underlay_mtu,
                namespace_prefix=settings.dhcp_namespace_prefix,
            ),
            kube=kube,
            driver=host_network,
            vms=self.vms,
        )
        # A leading dot: no image name (which starts alphanumeric) can collide with it.
        self.images = ImageCache(settings.image_dir / ".cache", policy=settings.image_sources)
        self.files = VmFiles(
            state_dir=settings.state_dir, image_dir=settings.image_dir, images=self.images
        )
        self.pulls = ImagePulls(settings=settings, files=self.files, vms=self.vms, queue=self.queue)
        self.selffence = (
            SelfFence(
                host=settings.host,
                deadline=settings.self_fence_after,
                kube=kube,
                hypervisor=hypervisor,
                state_dir=settings.state_dir,
            )
            if settings.self_fence_after
            else None
        )
        self.registration = HostRegistration(
            settings=settings,
            kube=kube,
            hypervisor=hypervisor,
            files=self.files,
            vms=self.vms,
            lease_guard=self.selffence,
        )
        self.migrator = Migrator(
            self,
            kube=kube,
            hypervisor=hypervisor,
            host=settings.host,
            libvirt_uri=settings.migration_uri or libvirt_uri,
            migrate_uri=settings.migrate_uri,
            shutdown_grace=settings.shutdown_grace,
        )
        self.fencer = Fencer(
            host=settings.host,
            kube=kube,
            hypervisor=hypervisor,
            vms=self.vms,
            files=self.files,
            incoming=self.migrator,
        )
        self.reconciler = Reconciler(
            settings=settings,
            kube=kube,
            hypervisor=hypervisor,
            vms=self.vms,
            files=self.files,
            host=self.registration,
            pulls=self.pulls,
            migrations=self.migrator,
            queue=self.queue,
            network=self.networking,
        )
        self.snapshots = Snapshotter(
            api=SnapshotApi(kube),
            hypervisor=hypervisor,
            files=self.files,
            host=settings.host,
            bound_vm=lambda namespace, name: self.vms.get(f"{namespace}/{name}"),
            shared=self.shared_storage,
        )
        self.ready = asyncio.Event()
        self._selector = f"{HOST_LABEL}={settings.host}"

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        await self.hv.connect()
        # The guard first: an agent that starts cut off from the API server still fences
        # in time, counting from its predecessor's last renewal.
        guard = (
            [asyncio.create_task(self.selffence.run(), name="self-fence")]
            if self.selffence is not None
            else []
        )
        try:
            await self._serve(guard)
        finally:
            for task in guard:
                task.cancel()
            await asyncio.gather(*guard, return_exceptions=True)

    async def _serve(self, guard: list[asyncio.Task[None]]) -> None:
        events = self.hv.events()
        resource_version = await retrying("listing VMs", self._list)
        await self.migrator.load()
        if self.networking.driver is not None:
            # Before the first converge: with every input listed, an agent that restarts
            # plans what its host already holds and changes nothing under running guests.
            await self.networking.load()
        await self.fencer.fence()
        await self.snapshots.load()
        await retrying("registering the host", self.registration.register)
        await retrying("renewing the Lease", self._renew_lease)
        self.ready.set()
        sdnotify.notify("READY=1")
        log.info("agent for host %s is ready with %d VMs", self.settings.host, len(self.vms))
        tasks = [
            asyncio.create_task(self.registration.heartbeat(), name="heartbeat"),
            asyncio.create_task(self._watch(resource_version), name="watch"),
            asyncio.create_task(self._hypervisor_events(events), name="libvirt-events"),
            asyncio.create_task(self._resync(), name="resync"),
            asyncio.create_task(self._tend_image_cache(), name="image-cache"),
            *guard,
            *(asyncio.create_task(watch, name="jobs") for watch in self.migrator.tasks()),
            *(asyncio.create_task(watch, name="snapshots") for watch in self.snapshots.tasks()),
            *(
                asyncio.create_task(part, name="network")
                for part in (self.networking.tasks() if self.networking.driver else [])
            ),
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

    async def _renew_lease(self) -> None:
        """The first renewal, through the guard: not while fenced (a fence this agent's
        predecessor or the watchdog left)."""
        if self.selffence is None:
            await self.registration.renew_lease()
        else:
            await self.selffence.renew(self.registration.renew_lease)

    async def _list(self) -> str:
        """List the VMs bound here; the listing's resourceVersion, to watch from."""
        items, resource_version = await self.kube.list_vms(label_selector=self._selector)
        self.vms.replace(items)
        for obj in items:
            self.migrator.bound_here(obj["metadata"]["uid"])
        return resource_version

    async def _watch(self, resource_version: str) -> None:
        """Follow the VMs bound here, queueing each one that changed."""
        while True:
            try:
                async for kind, obj in self.kube.watch_vms(
                    label_selector=self._selector, resource_version=resource_version
                ):
                    resource_version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._seen(kind, obj)
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

    def _seen(self, kind: str, obj: Object) -> None:
        if kind == "DELETED":
            key = key_of(obj)
            self.vms.unbound(key)
        else:
            key = self.vms.remember(obj)
            # A VM migrated here is bound now: from here on its own watch keeps it.
            self.migrator.bound_here(obj["metadata"]["uid"])
            self.networking.arrived(obj["metadata"]["uid"])
        # Its interfaces, or whether it counts here at all, may have changed.
        self.networking.changed()
        # The object is fresher than anything this agent wrote before it.
        self.reconciler.invalidate(key)
        self.queue.add(key)

    async def _hypervisor_events(self, events: Any) -> None:
        async for event in events:
            if isinstance(event, ConnectionEvent):
                log.info("libvirt %s: %s", "connected" if event.connected else "lost", event.reason)
                if event.connected:
                    await self._resync_once()
            elif isinstance(event, DomainEvent):
                key = self.vms.key(event.uuid)
                if key is not None:
                    self.queue.add(key)
                else:
                    # A domain no VM of this host owns appeared or changed: check it now.
                    self.fencer.fence_soon()

    async def _tend_image_cache(self) -> None:
        """Evict and report the cache whenever a download ends or a VM's files change."""
        await self.pulls.tend(self.registration.register)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_interval)
            await self._resync_once()

    async def _resync_once(self) -> None:
        try:
            await self.fencer.fence()
            self.pulls.evict()
            self.networking.resync()
            await self.registration.register()
        except HypervisorError as error:
            log.warning("resync postponed: %s", error)
        for key in self.vms:
            self.queue.add(key)

    async def _worker(self) -> None:
        """Reconcile keys from the queue; `run` starts `settings.workers` of these.

        A failed reconcile backs its key off (`WorkQueue.retry`: 1 s doubling to 60 s, or
        the error's own delay when longer; a success resets it). Until the hold ends the
        key is reconciled only when what it asks for changed: another object under the
        name, a spec change (metadata.generation), deletion, the controller's word in status
        (unbinding, eviction), or a migration starting or ending. The triggers a failed
        attempt causes itself (libvirt's lifecycle events of the define and the failed
        start, the watch echoing the status just written) are skipped, or each of them would
        retry the key at once, some ten times a second, however long the error asked to wait.
        """
        while True:
            key = await self.queue.get()
            try:
                if self.selffence is not None:
                    await self.selffence.wait_unfenced()  # nothing fenced may start again
                request = self._request(key)
                if not self.queue.due(key, request):
                    continue
                with metrics.timed(metrics.RECONCILE_DURATION, "agent-vm"):
                    await self.reconciler.reconcile(key)
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
                # A VM whose domain is gone no longer holds its networks here.
                self.networking.changed()

    def _request(self, key: str) -> tuple[Any, ...]:
        """What the VM of `key` asks for now, as far as backing off cares (see `worker`)."""
        obj = self.vms.get(key) or {}
        meta, current = obj.get("metadata") or {}, obj.get("status") or {}
        return (
            meta.get("uid"),
            meta.get("generation"),
            meta.get("deletionTimestamp"),
            current.get("host"),
            current.get("eviction"),
            self.migrator.migrating_to(key),
        )

    # -- migration.AgentPort -------------------------------------------------------------

    def bound_vm(self, key: str) -> Object | None:
        return self.vms.get(key)

    def owns(self, uid: str) -> bool:
        return self.vms.key(uid) is not None

    def requeue(self, key: str) -> None:
        self.queue.add(key)

    def shared_storage(self) -> SharedStorage | None:
        return self.registration.shared

    async def environment(self, vm: VirtualMachine, uid: str) -> HostEnvironment:
        await self.registration.refresh_shared()
        return await self.reconciler.environment(vm, uid)

    async def remove_stray(self, uid: str) -> None:
        await self.fencer.remove_stray(uid)
        self.networking.arrived(uid)
