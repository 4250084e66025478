"""This host's VM snapshots: copies of its VMs' disks into its image cache.

The agent watches VirtualMachineSnapshots in every namespace and takes those of the VMs
bound here (`core.snapshots.takes`). Each disk's overlay is copied into one
self-contained qcow2 with its backing chain folded in: for a stopped VM by `qemu-img
convert`, for a running one by the driver (`drivers.snapshots.DiskCopier`: libvirt's
push backup job, the guest running on). The copy is written to a dot-named partial file
in the cache's `sha256/` directory, hashed, and renamed to its digest only when whole, so
the cache never holds half a snapshot; a failure removes the partial file and the VM is
not touched. The cache then serves the image like a downloaded one.

`records` keeps, per snapshot uid, the digests it holds (`<state>/snapshots/<uid>.json`):
the image cache's eviction keeps them while the snapshot exists (`kept_digests`), and
forgets them when it is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubevisor.agent.vmfiles import VmFiles
from kubevisor.api.hypervisorhost import SharedStorage
from kubevisor.api.snapshot import SnapshotDisk
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core import snapshots
from kubevisor.core.convergence import DomainState
from kubevisor.drivers.base import DomainNotFound, Hypervisor, HypervisorError
from kubevisor.drivers.snapshots import DiskCopier, DiskCopy
from kubevisor.kube.client import Object
from kubevisor.kube.errors import Gone, is_transient, retrying
from kubevisor.kube.snapshots import SnapshotApi

log = logging.getLogger("kubevisor.agent.snapshots")

CHUNK = 1 << 20
COPY_TIMEOUT = 3600.0
"""Seconds one snapshot's copy may take before it is aborted and failed."""
RUNNING = frozenset({DomainState.RUNNING, DomainState.PAUSED, DomainState.BLOCKED})


class SnapshotFailed(Exception):
    """A snapshot that cannot be taken; `reason` is its status.reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Taken:
    disks: list[SnapshotDisk]
    running: bool
    frozen: bool


class SnapshotRecords:
    """Digests of the images each snapshot taken here holds, by snapshot uid."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, uid: str, digests: list[str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f".{uid}.partial"
        partial.write_text(json.dumps(sorted(digests)))
        os.replace(partial, self.directory / f"{uid}.json")

    def remove(self, uid: str) -> None:
        (self.directory / f"{uid}.json").unlink(missing_ok=True)

    def uids(self) -> set[str]:
        if not self.directory.is_dir():
            return set()
        return {path.stem for path in self.directory.glob("*.json")}

    def digests(self) -> set[str]:
        """Every digest a snapshot here holds: the image cache keeps them."""
        found: set[str] = set()
        for uid in self.uids():
            with contextlib.suppress(OSError, ValueError):
                found.update(json.loads((self.directory / f"{uid}.json").read_text()))
        return found


def kept_digests(state_dir: Path) -> set[str]:
    """The digests the snapshots taken on the host with `state_dir` hold."""
    return SnapshotRecords(state_dir / "snapshots").digests()


class Snapshotter:
    """Takes the snapshots of the VMs bound here. `bound_vm(namespace, name)` is the VM
    as the agent's own watch holds it, None when it is not bound here."""

    def __init__(
        self,
        *,
        api: SnapshotApi,
        hypervisor: Hypervisor,
        files: VmFiles,
        host: str,
        bound_vm: Callable[[str, str], Object | None],
        shared: Callable[[], SharedStorage | None],
        timeout: float = COPY_TIMEOUT,
    ) -> None:
        self._api = api
        self._hv = hypervisor
        self._files = files
        self._host = host
        self._bound_vm = bound_vm
        self._shared = shared
        self._timeout = timeout
        self._taking: dict[str, asyncio.Task[None]] = {}
        self._version = ""
        self.records = SnapshotRecords(files.state_dir / "snapshots")

    async def load(self) -> None:
        """List the snapshots once (before the watch): fail the ones this host was taking
        when its agent stopped, remove their partial files, and forget the records of
        deleted snapshots."""
        items = await self._list()
        self._remove_partials()
        interrupted = [
            obj
            for obj in items
            if (obj.get("status") or {}).get("phase") == "InProgress"
            and obj["status"].get("host") == self._host
        ]
        for obj in interrupted:
            status = obj["status"]
            await self._fail(
                obj,
                snapshots.AGENT_RESTARTED,
                "the agent restarted while taking it",
                vm_uid=str(status.get("vmUID", "")),
                started=_now(),
            )
        await self._take_listed([obj for obj in items if obj not in interrupted])

    async def _list(self) -> list[Object]:
        items, self._version = await retrying("listing VirtualMachineSnapshots", self._api.list)
        existing = {obj["metadata"]["uid"] for obj in items}
        for uid in self.records.uids() - existing:
            self.records.remove(uid)
        return items

    async def _take_listed(self, items: list[Object]) -> None:
        for obj in items:
            await self.on_snapshot("ADDED", obj)

    def tasks(self) -> list[Coroutine[Any, Any, None]]:
        return [self._watch()]

    async def _watch(self) -> None:
        while True:
            try:
                async for kind, obj in self._api.watch(resource_version=self._version):
                    self._version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        await self.on_snapshot(kind, obj)
            except Gone:
                # Not `load`: the snapshots being taken now are this agent's own.
                await self._take_listed(await self._list())
            except Exception as error:
                if not is_transient(error):
                    raise
                log.warning("VirtualMachineSnapshot watch broke (%s); watching again", error)
                await asyncio.sleep(1.0)

    async def on_snapshot(self, kind: str, obj: Object) -> None:
        meta = obj["metadata"]
        uid = str(meta["uid"])
        if kind == "DELETED":
            self.records.remove(uid)
            return
        if uid in self._taking:
            return
        vm = self._bound_vm(str(meta["namespace"]), str(obj["spec"]["vm"]))
        if not snapshots.takes(obj, vm, host=self._host):
            return
        assert vm is not None
        task = asyncio.get_running_loop().create_task(self._take(obj, vm), name=f"snap-{uid}")
        self._taking[uid] = task
        task.add_done_callback(lambda _: self._taking.pop(uid, None))

    async def wait(self) -> None:
        """Until the snapshots being taken now are done (tests, shutdown)."""
        await asyncio.gather(*list(self._taking.values()), return_exceptions=True)

    # -- one snapshot ------------------------------------------------------------------

    async def _take(self, obj: Object, vm: Object) -> None:
        started = _now()
        vm_uid = str(vm["metadata"]["uid"])
        try:
            progress = snapshots.status(phase="InProgress", **self._base(obj, vm_uid, started))
            await self._apply(obj, progress)
            taken = await self._copy(obj, vm)
        except SnapshotFailed as failure:
            log.warning("snapshot %s failed: %s", _name(obj), failure)
            await self._fail(obj, failure.reason, str(failure), vm_uid=vm_uid, started=started)
            return
        self.records.write(obj["metadata"]["uid"], [disk.sha256 for disk in taken.disks])
        ready = snapshots.status(
            phase="Ready",
            disks=taken.disks,
            consistent=snapshots.consistency(running=taken.running, frozen=taken.frozen),
            **self._base(obj, vm_uid, started),
        )
        await self._apply(obj, ready)
        log.info("snapshot %s ready: %s", _name(obj), ready["conditions"][0]["message"])

    def _base(self, obj: Object, vm_uid: str, started: datetime) -> dict[str, Any]:
        """The arguments of `snapshots.status` every phase shares."""
        return {
            "host": self._host,
            "vm_uid": vm_uid,
            "previous": obj.get("status"),
            "generation": int(obj["metadata"].get("generation", 1)),
            "now": _now(),
            "started": started,
        }

    async def _fail(
        self, obj: Object, reason: str, message: str, *, vm_uid: str, started: datetime
    ) -> None:
        base = self._base(obj, vm_uid, started)
        failed = snapshots.status(phase="Failed", reason=reason, message=message, **base)
        try:
            await self._apply(obj, failed)
        except Exception as error:
            log.warning("could not report snapshot %s failed: %s", _name(obj), error)

    async def _apply(self, obj: Object, status: Object) -> None:
        meta = obj["metadata"]
        await self._api.apply_status(str(meta["namespace"]), str(meta["name"]), status)

    async def _copy(self, obj: Object, vm: Object) -> Taken:
        model = VirtualMachine.model_validate(vm)
        uid = str(vm["metadata"]["uid"])
        overlays = self._overlays(model, uid)
        cache = self._files.images
        (cache.root / "sha256").mkdir(parents=True, exist_ok=True)
        snap = str(obj["metadata"]["uid"])
        partials = {
            name: cache.root / "sha256" / f".snapshot-{snap}-{name}.partial" for name in overlays
        }
        try:
            running, frozen = await self._write(uid, overlays, partials)
            disks = [await self._keep(name, partial) for name, partial in partials.items()]
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                full = f"the image cache is full: {error}"
                raise SnapshotFailed(snapshots.DISK_FULL, full) from error
            raise SnapshotFailed(snapshots.COPY_FAILED, str(error)) from error
        except HypervisorError as error:
            raise SnapshotFailed(snapshots.COPY_FAILED, str(error)) from error
        finally:
            for partial in partials.values():
                partial.unlink(missing_ok=True)
        return Taken(disks=disks, running=running, frozen=frozen)

    def _overlays(self, vm: VirtualMachine, uid: str) -> dict[str, Path]:
        if not vm.spec.disks:
            raise SnapshotFailed(snapshots.DISK_NOT_FOUND, "the VM has no disks")
        shared = self._shared()
        storage = self._files.storage(uid, shared)
        if storage is None:
            raise SnapshotFailed(
                snapshots.DISK_NOT_FOUND, f"the VM has no disks on {self._host} yet"
            )
        directory = (
            self._files.directory(uid)
            if storage.location == "Local" or shared is None
            else self._files.shared_directory(uid, shared)
        )
        overlays = {disk.name: directory / f"disk-{disk.name}.qcow2" for disk in vm.spec.disks}
        missing = sorted(name for name, path in overlays.items() if not path.is_file())
        if missing:
            raise SnapshotFailed(
                snapshots.DISK_NOT_FOUND, f"disk(s) {', '.join(missing)} not created yet"
            )
        return overlays

    async def _write(
        self, uid: str, overlays: dict[str, Path], partials: dict[str, Path]
    ) -> tuple[bool, bool]:
        """Write every disk's copy to its partial file: (VM running, guest frozen)."""
        try:
            state = (await self._hv.state(uid)).state
        except DomainNotFound:
            state = DomainState.SHUTOFF
        if state not in RUNNING:
            for name, overlay in overlays.items():
                await _qemu_img("convert", "-q", "-O", "qcow2", str(overlay), str(partials[name]))
            return False, False
        if not isinstance(self._hv, DiskCopier):
            raise SnapshotFailed(
                snapshots.UNSUPPORTED,
                "this hypervisor cannot copy a running VM's disks; stop the VM first",
            )
        copies = [DiskCopy(str(overlays[name]), str(partials[name])) for name in overlays]
        outcome = await self._hv.copy_running_disks(
            uid, copies, quiesce=True, timeout=self._timeout
        )
        log.info("disks of %s cut in %.3f s (frozen: %s)", uid, outcome.cut_seconds, outcome.frozen)
        return True, outcome.frozen

    async def _keep(self, name: str, partial: Path) -> SnapshotDisk:
        """Hash the copy and move it into the cache under its digest."""
        digest, size = await asyncio.to_thread(_digest, partial)
        info = json.loads(await _qemu_img("info", "--output=json", "-f", "qcow2", str(partial)))
        target = self._files.images.path(digest)
        if target.is_file():
            os.utime(target)  # the same bytes as an image already here
        else:
            os.chmod(partial, 0o444)
            os.replace(partial, target)
        return SnapshotDisk(
            name=name, sha256=digest, size=size, virtual_size=int(info["virtual-size"])
        )

    def _remove_partials(self) -> None:
        directory = self._files.images.root / "sha256"
        if directory.is_dir():
            for partial in directory.glob(".snapshot-*.partial"):
                partial.unlink(missing_ok=True)


def _digest(path: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


class QemuImgFailed(Exception):
    """qemu-img failed; `full` when for want of space."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.full = "No space left on device" in message or "Disk quota exceeded" in message


async def qemu_img(*args: str) -> str:
    """qemu-img's output; raises QemuImgFailed with its error."""
    process = await asyncio.create_subprocess_exec(
        "qemu-img", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise QemuImgFailed(f"qemu-img {args[0]} failed: {err.decode().strip()}")
    return out.decode()


async def _qemu_img(*args: str) -> str:
    try:
        return await qemu_img(*args)
    except QemuImgFailed as error:
        reason = snapshots.DISK_FULL if error.full else snapshots.COPY_FAILED
        raise SnapshotFailed(reason, str(error)) from error


def _name(obj: Object) -> str:
    return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


def _now() -> datetime:
    return datetime.fromtimestamp(time.time(), UTC)
