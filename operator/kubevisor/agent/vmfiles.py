"""Files the agent creates on its host for one VM, and removes with it.

Per VM (by uid) a directory under the agent's state directory holds the NoCloud seed ISO
built from spec.cloudInit, the UEFI variables and the serial console log, and, unless the
host declares shared storage, one qcow2 overlay per disk (copy-on-write on a base image
from the host's image directory or from the image cache, which downloads a disk's
`source`; or blank). Beside the overlays, `images.json` records the digest of the cached
image under each overlay created on one (written before the overlay, so the image cache
never evicts an image an overlay is backed by). Creating is idempotent: an existing overlay
is kept, because it holds the guest's data. A base image backs a new overlay only once it
is known to be self-contained and of its declared format (`core.imagefiles`): a qcow2
naming a backing or data file would hand the guest a host file; the VM fails with
ImageRejected instead.

On a host with shared storage (HypervisorHost spec.sharedStorage, an NFS or CephFS mount
at the same path on every host that declares it) the overlays of the VMs created here go
to `<path>/vms/<uid>/` instead, on base images cached in `<path>/images/`: every host
sharing it sees the same chain at the same paths, so a live migration between them copies
no disk and a VM restarted elsewhere after a host failure finds its data. The agent removes
a VM's shared overlays only when the VM itself is deleted (`remove(uid, shared=...)`):
migrating away, eviction and fencing leave them to whichever host runs the VM next.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubevisor.agent import hostpaths
from kubevisor.agent.imagecache import ImageCache
from kubevisor.api import quantity
from kubevisor.api.hypervisorhost import SharedStorage
from kubevisor.api.virtualmachine import Disk, ImageFormat, VirtualMachine, VmStorage
from kubevisor.core import destinations, imagefiles
from kubevisor.drivers.base import PermanentError, RetryableError

log = logging.getLogger("kubevisor.agent")

IMAGES = "images.json"
QEMU_IMG_TIMEOUT = 30.0
"""Seconds `qemu-img info` may take on an image before it is refused."""
QEMU_IMG_LIMITS = ("prlimit", "--as=1073741824", "--cpu=30", "--")
"""As Nova runs it on images users supply: a crafted image must not exhaust the host."""


class ImageRejected(PermanentError):
    """A base image that may not back an overlay: not its declared format, or one that
    references another file (a backing or data file); the VM fails with this reason."""

    reason = "ImageRejected"


@dataclass(frozen=True, slots=True)
class PreparedFiles:
    disk_paths: dict[str, str]
    seed_iso: str | None
    serial_log: str
    storage: VmStorage


class VmFiles:
    def __init__(
        self,
        *,
        state_dir: Path,
        image_dir: Path,
        images: ImageCache | None = None,
        on_remove: Callable[[str], None] | None = None,
        on_use: Callable[[str], None] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.image_dir = image_dir
        # A leading dot: no image name (which starts alphanumeric) can collide with it.
        self.images = images or ImageCache(image_dir / ".cache", policy=destinations.Policy())
        self._shared_images: dict[Path, ImageCache] = {}
        self.on_remove = on_remove
        """Called with the uid after a VM's files are removed (the agent evicts images)."""
        self.on_use = on_use
        """Called with the digest once a new overlay is recorded as backed by that cached
        image (the agent reports the image's users in the host's status)."""

    def directory(self, uid: str) -> Path:
        """The VM's directory on this host (and its overlays, unless on shared storage)."""
        return self.state_dir / "vms" / uid

    @staticmethod
    def shared_directory(uid: str, shared: SharedStorage) -> Path:
        return Path(shared.path) / "vms" / uid

    def cache_for(self, shared: SharedStorage | None) -> ImageCache:
        """The image cache overlays in `shared` (or on this host's disk) are backed by."""
        if shared is None:
            return self.images
        root = Path(shared.path) / "images"
        if root not in self._shared_images:
            # Its downloads end like the host's own: the agent re-queues the VMs waiting.
            self._shared_images[root] = ImageCache(
                root,
                policy=self.images.policy,
                on_done=self.images.on_done,
                tls=self.images.tls,
            )
        return self._shared_images[root]

    def storage(self, uid: str, shared: SharedStorage | None) -> VmStorage | None:
        """Where the VM's overlays are on this host; None when it has none here.

        A VM with overlays on this host's disk keeps them there even after the host
        declares shared storage: they hold the guest's data.
        """
        if any(self.directory(uid).glob("disk-*.qcow2")):
            return VmStorage(location="Local")
        if shared is not None and any(self.shared_directory(uid, shared).glob("disk-*.qcow2")):
            return VmStorage(location="Shared", shared_storage=shared.name)
        return None

    def storage_for(self, vm: VirtualMachine, uid: str, shared: SharedStorage | None) -> VmStorage:
        """Where `prepare` puts the VM's overlays: where they are, else in `shared`."""
        storage = self.storage(uid, shared)
        if storage is not None:
            return storage
        if shared is None or not vm.spec.disks:
            return VmStorage(location="Local")
        return VmStorage(location="Shared", shared_storage=shared.name)

    def image_cache(self, vm: VirtualMachine, uid: str, shared: SharedStorage | None) -> ImageCache:
        """The cache the VM's overlays are (or will be) backed by: the agent downloads
        their images there before `prepare`."""
        local = self.storage_for(vm, uid, shared).location == "Local"
        return self.cache_for(None if local else shared)

    def serial_log(self, uid: str) -> Path:
        return self.directory(uid) / "serial.log"

    async def prepare(
        self, vm: VirtualMachine, uid: str, *, shared: SharedStorage | None = None
    ) -> PreparedFiles:
        directory = self.directory(uid)
        directory.mkdir(parents=True, exist_ok=True)
        storage = self.storage_for(vm, uid, shared)
        if storage.location == "Shared":
            assert shared is not None
            disk_dir, cache = self.shared_directory(uid, shared), self.cache_for(shared)
            disk_dir.mkdir(parents=True, exist_ok=True)
        else:
            disk_dir, cache = directory, self.images
        disks = {disk.name: str(await self._disk(disk_dir, disk, cache)) for disk in vm.spec.disks}
        seed = None
        if vm.spec.cloud_init is not None:
            seed = str(await self._seed(directory, vm, uid))
        return PreparedFiles(
            disk_paths=disks, seed_iso=seed, serial_log=str(self.serial_log(uid)), storage=storage
        )

    def remove(self, uid: str, *, shared: SharedStorage | None = None) -> None:
        """Remove the VM's files on this host, and its overlays in `shared` when given:
        only for a deleted VM, since any other host sharing the storage may run it next."""
        shutil.rmtree(self.directory(uid), ignore_errors=True)
        if shared is not None:
            shutil.rmtree(self.shared_directory(uid, shared), ignore_errors=True)
        if self.on_remove is not None:
            self.on_remove(uid)

    def known_uids(self) -> set[str]:
        vms = self.state_dir / "vms"
        return {p.name for p in vms.iterdir()} if vms.is_dir() else set()

    def images_in_use(self) -> Counter[str]:
        """Digests of the images in this host's own cache its overlays are backed by, each
        with the number of disks on it (overlays in shared storage use the shared cache)."""
        counts: Counter[str] = Counter()
        for uid in self.known_uids():
            record = self.directory(uid) / IMAGES
            try:
                counts.update(json.loads(record.read_text()).values())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as error:
                log.warning("cannot read %s: %s", record, error)
        return counts

    async def _disk(self, directory: Path, disk: Disk, cache: ImageCache) -> Path:
        overlay = directory / f"disk-{disk.name}.qcow2"
        if overlay.exists():
            return overlay
        partial = overlay.with_suffix(".partial")
        args = ["create", "-q", "-f", "qcow2"]
        if disk.image is not None:
            # Resolved: a symlink in the image directory may not lead out of it.
            base = hostpaths.image(disk.image, self.image_dir, disk=disk.name)
            if not base.is_file():
                raise PermanentError(
                    f"disk {disk.name}: base image {disk.image!r} is not in {self.image_dir}"
                )
            format = await _vetted(base, declared=None, disk=disk.name)
            args += ["-b", str(base), "-F", format]
        elif disk.source is not None:
            source = disk.source
            _record_image(directory, disk.name, source.sha256)
            if self.on_use is not None:
                self.on_use(source.sha256)
            cached = await cache.fetch(source.url, source.sha256, source.compression)
            format = await _vetted(cached, declared=source.format, disk=disk.name)
            args += ["-b", str(cached), "-F", format]
        args.append(str(partial))
        if disk.size is not None:
            args.append(str(quantity.to_bytes(disk.size)))
        await _run("qemu-img", *args)
        partial.replace(overlay)
        return overlay

    async def _seed(self, directory: Path, vm: VirtualMachine, uid: str) -> Path:
        cloud = vm.spec.cloud_init
        assert cloud is not None
        name = str(vm.metadata.get("name", uid))
        meta = cloud.meta_data or f"instance-id: {uid}\nlocal-hostname: {name}\n"
        files = {"user-data": cloud.user_data or "", "meta-data": meta}
        if cloud.network_config:
            files["network-config"] = cloud.network_config
        seed = directory / "seed.iso"
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            for file_name, text in files.items():
                (Path(tmp) / file_name).write_text(text)
            partial = directory / "seed.iso.partial"
            await _run(
                "genisoimage",
                "-quiet",
                "-output",
                str(partial),
                "-volid",
                "cidata",
                "-joliet",
                "-rock",
                *sorted(files),
                cwd=Path(tmp),
            )
        partial.replace(seed)
        return seed


async def _vetted(image: Path, *, declared: ImageFormat | None, disk: str) -> ImageFormat:
    """The format `image` backs `disk`'s overlay in, once it is known to be the declared
    one (if any), qcow2 or raw, and to reference no other file; raises ImageRejected.

    The format is the declared one, never a probed one (a raw image could pose as qcow2),
    and qemu-img reads the file in that format only: probing a vmdk opens its extents.
    """
    with image.open("rb") as file:
        detected = imagefiles.detect(file.read(imagefiles.HEADER_BYTES))
    refused = imagefiles.format_refusal(detected, declared=declared)
    if refused is None:
        format: ImageFormat = "qcow2" if detected == "qcow2" else "raw"
        # -f: qemu-img reads it in that format only; -U: a running VM's base is shared.
        argv = ["qemu-img", "info", "-U", "--output=json", "-f", format, str(image)]
        try:
            info = json.loads(await _run(*argv, timeout=QEMU_IMG_TIMEOUT, limits=QEMU_IMG_LIMITS))
        except (RetryableError, ValueError) as error:
            refused = f"qemu-img cannot read it: {error}"
        else:
            refused = imagefiles.info_refusal(info, format=format)
    if refused is not None:
        raise ImageRejected(f"disk {disk}: image {image.name} refused: {refused}")
    return format


def _record_image(directory: Path, disk: str, sha256: str) -> None:
    """Add `disk`'s image to the record of the cached images the overlays here use."""
    record = directory / IMAGES
    try:
        disks = json.loads(record.read_text())
    except FileNotFoundError:
        disks = {}
    disks[disk] = sha256
    partial = record.with_suffix(".partial")
    partial.write_text(json.dumps(disks, sort_keys=True))
    os.replace(partial, record)


async def _run(
    *argv: str,
    cwd: Path | None = None,
    timeout: float | None = None,
    limits: tuple[str, ...] = (),
) -> str:
    """`argv`'s output; `limits`: a command that runs it with resource limits."""
    try:
        process = await asyncio.create_subprocess_exec(
            *limits,
            *argv,
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as error:
        raise PermanentError(f"{(limits or argv)[0]} is not installed on this host") from error
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        command = " ".join(argv[:2])
        raise RetryableError(f"{command} did not finish within {timeout:.0f} s") from None
    if process.returncode != 0:
        raise RetryableError(f"{' '.join(argv[:2])} failed: {err.decode().strip()}")
    return out.decode()
