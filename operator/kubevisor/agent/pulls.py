"""The agent's bookkeeping of disk image downloads: which VMs wait for which image,
which failure each VM has reported, and evicting what no VM here uses any more.

A disk whose `source` image this host lacks is downloaded before the domain is defined:
the download runs in the background (`ImageCache`); the reconciler asks `pull` for the
state of a VM's downloads (starting them), shows their progress and asks again until the
images are cached. A finished download re-queues the VMs waiting for it. A failed one is
reported once per attempt, and retried with the work queue's back-off, or stalls the VM
until its spec changes when no retry can help. Unused images are evicted by age and size
on the resync and whenever a download ends or a VM's files come or go (`tend`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from kubevisor.agent import snapshots
from kubevisor.agent.imagecache import ImageCache, ImagePullError, Pull
from kubevisor.agent.settings import Settings
from kubevisor.agent.vmfiles import VmFiles
from kubevisor.agent.vms import BoundVms, key_of
from kubevisor.agent.workqueue import WorkQueue
from kubevisor.api.hypervisorhost import SharedStorage
from kubevisor.api.virtualmachine import ImageSource, VirtualMachine
from kubevisor.core.cacheeviction import CachedFile
from kubevisor.core.imagepulls import ImagePullState, PullFailure
from kubevisor.drivers.base import PermanentError
from kubevisor.kube.client import Object

log = logging.getLogger("kubevisor.agent")


class ImagePulls:
    """Subscribes to `files` (and its image cache) for the changes that re-queue VMs and
    evict images: construct it right after them, before anything is downloaded."""

    def __init__(
        self, *, settings: Settings, files: VmFiles, vms: BoundVms, queue: WorkQueue
    ) -> None:
        self._settings = settings
        self._files = files
        self._vms = vms
        self._queue = queue
        self._reported: dict[str, dict[str, tuple[int, int]]] = {}
        """Per key, per digest: (attempt, metadata.generation) of the failed download its
        status reported, so its next reconcile (after the back-off) tries a new one."""
        self._changed = asyncio.Event()
        """Set when a download ended or a VM's files came or went: evict, then report."""
        files.images.on_done = self._image_done
        files.on_remove = self._files_changed
        files.on_use = self._files_changed

    def _image_done(self, sha256: str) -> None:
        """A download ended (ImageCache.on_done): the VMs waiting for it go on."""
        for obj in self._vms.objects():
            if sha256 in _source_digests(obj):
                self._queue.add(key_of(obj))
        self._changed.set()

    def _files_changed(self, _: str) -> None:
        """VmFiles.on_remove (the VM's images may be unused now) and on_use (one more disk
        here uses the image; the host's status says how many, and an image already cached
        ends no download that would report it)."""
        self._changed.set()

    async def tend(self, report: Callable[[], Awaitable[None]]) -> None:
        """Evict, then `report` the cache (the host's status), whenever it changed."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                self.evict()
                await report()
            except Exception as error:
                # The resync evicts and registers again; nothing here may stop the agent.
                log.warning("could not evict or report the image cache: %s", error)

    def evict(self) -> list[CachedFile]:
        """Evict the cached images no overlay here is backed by and no bound VM wants, by
        the age and size limits of the settings."""
        keep = set(self._files.images_in_use()) | snapshots.kept_digests(self._files.state_dir)
        for obj in self._vms.objects():
            keep |= _source_digests(obj)
        return self._files.images.evict(
            keep=keep,
            now=time.time(),
            max_bytes=self._settings.image_cache_max_bytes,
            max_unused=self._settings.image_cache_max_unused,
        )

    def forget(self, key: str) -> None:
        """The VM is gone from this host: its reported failures with it."""
        self._reported.pop(key, None)

    def pull(
        self,
        key: str,
        vm: VirtualMachine,
        uid: str,
        *,
        generation: int,
        shared: SharedStorage | None,
    ) -> tuple[tuple[ImagePullState, ...], PullFailure | None]:
        """The disks whose images this host lacks, with their downloads started or
        followed, and the failure to raise (after writing status) if one failed: the first
        permanent one, else the first.

        A failed download is reported once per attempt; the key's next reconcile, after the
        back-off, starts a new attempt. A permanent failure is tried again only for a new
        spec (metadata.generation).
        """
        reported = self._reported.setdefault(key, {})
        cache = self._files.image_cache(vm, uid, shared)
        sources = [(disk.name, disk.source) for disk in vm.spec.disks if disk.source is not None]
        pulls: dict[str, Pull | None] = {}
        for _, source in sources:
            if source.sha256 not in pulls:
                pulls[source.sha256] = _pull_image(cache, source, reported, generation)
        states = []
        for disk, source in sources:
            pull = pulls[source.sha256]
            if pull is None:
                continue
            failure = None
            if pull.error is not None:
                reported[source.sha256] = (pull.attempts, generation)
                failure = self._failure(key, pull.error, attempts=pull.attempts)
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
            del self._reported[key]
        failures = [state.failure for state in states if state.failure is not None]
        failures.sort(key=lambda failure: not failure.permanent)
        return tuple(states), failures[0] if failures else None

    def _failure(self, key: str, error: ImagePullError, *, attempts: int) -> PullFailure:
        if isinstance(error, PermanentError):
            return PullFailure(permanent=True, reason=error.reason, message=str(error))
        # Backing off by the image's attempts, not the key's failures: the reconcile that
        # starts the next attempt succeeds, and a success resets the key's count.
        delay = self._queue.backoff(attempts - 1)
        return PullFailure(
            permanent=False,
            reason=error.reason,
            message=str(error),
            # What the worker's `queue.retry` will hold the key for once this is raised.
            retry_in=self._queue.next_delay(key, at_least=delay),
        )


def _pull_image(
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


def _source_digests(obj: Object) -> set[str]:
    """The digests of a VM's disk images from URLs, read from the object as it is."""
    disks = (obj.get("spec") or {}).get("disks") or []
    return {str(d["source"]["sha256"]) for d in disks if (d.get("source") or {}).get("sha256")}
