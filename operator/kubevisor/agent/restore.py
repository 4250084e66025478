"""Restoring a VM's disks from one of its snapshots, on its host, before it starts.

`kubevisor restore VM SNAPSHOT` (refused unless the VM is stopped) sets the VM's
`kubevisor.io/restore` annotation; the agent acts on it only when it is about to start the
domain, so never under a running guest. Each disk the snapshot holds gets a new overlay:
the snapshot's image copied (`qemu-img convert`, backing chain folded in) to a partial
file, then renamed over the disk's overlay, so a failure leaves the old disk whole. The
VM object is the same, so its identity (name, UID, MAC addresses, IP addresses) stays.
A marker file in the VM's directory records the request done, so each is done once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kubevisor.agent.imagecache import ImageCache
from kubevisor.agent.snapshots import QemuImgFailed, qemu_img
from kubevisor.agent.vmfiles import VmFiles
from kubevisor.api.hypervisorhost import SharedStorage
from kubevisor.api.snapshot import VirtualMachineSnapshot
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.api.wire import AGENT, RESTORE_ANNOTATION, VIRTUAL_MACHINES
from kubevisor.drivers.base import PermanentError, RetryableError
from kubevisor.kube.client import Kube, Object
from kubevisor.kube.snapshots import SnapshotApi

log = logging.getLogger("kubevisor.agent.restore")

MARKER = "restored"


def request(vm: VirtualMachine) -> str | None:
    """The restore the VM asks for (the annotation's value), None when it asks none."""
    value = (vm.metadata.get("annotations") or {}).get(RESTORE_ANNOTATION)
    return str(value) if value else None


async def restore_pending(
    vm: VirtualMachine, uid: str, *, files: VmFiles, kube: Kube, shared: SharedStorage | None
) -> None:
    """Do the restore the VM asks for, if not done yet (the reconciler calls this right
    before it defines and starts the domain)."""
    name = pending(vm, files.directory(uid))
    if name is None:
        return
    namespace = str(vm.metadata.get("namespace"))
    snapshot = await SnapshotApi(kube).get(namespace, name)
    storage = files.storage_for(vm, uid, shared)
    if storage.location == "Shared" and shared is not None:
        disk_dir = files.shared_directory(uid, shared)
    else:
        disk_dir = files.directory(uid)
    disk_dir.mkdir(parents=True, exist_ok=True)
    disks = await restore(
        vm=vm,
        snapshot=snapshot,
        name=name,
        disk_dir=disk_dir,
        vm_dir=files.directory(uid),
        cache=files.images,
    )
    involved = {"kind": VIRTUAL_MACHINES.kind, "metadata": {**vm.metadata, "uid": uid}}
    message = f"disk(s) {', '.join(disks)} restored from snapshot {name}"
    try:
        await kube.event(
            involved=involved, type_="Normal", reason="Restored", message=message, component=AGENT
        )
    except Exception as error:  # the restore is done; only its Event is lost
        log.warning("could not record the restore of %s: %s", vm.metadata.get("name"), error)


def pending(vm: VirtualMachine, directory: Path) -> str | None:
    """The snapshot name of a restore asked for and not done yet in `directory`."""
    wanted = request(vm)
    if wanted is None:
        return None
    marker = directory / MARKER
    if marker.is_file() and marker.read_text() == wanted:
        return None
    return wanted.split("@", 1)[0]


async def restore(
    *,
    vm: VirtualMachine,
    snapshot: Object | None,
    name: str,
    disk_dir: Path,
    vm_dir: Path,
    cache: ImageCache,
) -> list[str]:
    """Put the VM's disks back to `snapshot`'s images; raises PermanentError when the
    snapshot cannot be restored here (missing, not Ready, another VM's, images elsewhere);
    the names of the disks restored."""
    images = _images(vm, snapshot, name=name, cache=cache)
    for disk, image in images.items():
        overlay = disk_dir / f"disk-{disk}.qcow2"
        partial = overlay.with_suffix(".restore.partial")
        try:
            await qemu_img("convert", "-q", "-O", "qcow2", str(image), str(partial))
            partial.replace(overlay)
        except QemuImgFailed as error:
            raise RetryableError(f"restoring disk {disk} from snapshot {name}: {error}") from error
        finally:
            partial.unlink(missing_ok=True)
    wanted = request(vm)
    assert wanted is not None
    (vm_dir / MARKER).write_text(wanted)
    disks = sorted(images)
    log.info("%s: disks %s restored from snapshot %s", vm.metadata.get("name"), disks, name)
    return disks


def _images(
    vm: VirtualMachine, snapshot: Object | None, *, name: str, cache: ImageCache
) -> dict[str, Path]:
    where = f"snapshot {name}"
    if snapshot is None:
        raise PermanentError(f"{where} does not exist in the VM's namespace")
    snap = VirtualMachineSnapshot.model_validate(snapshot)
    status = snap.status
    if status is None or status.phase != "Ready":
        phase = status.phase if status is not None else None
        raise RetryableError(f"{where} is not Ready (phase {phase or 'Pending'})", delay=5.0)
    if status.vm_uid != vm.metadata.get("uid"):
        raise PermanentError(
            f"{where} copies another VM ({snap.spec.vm}, uid {status.vm_uid}); "
            "clone it into a new VM instead"
        )
    disks = {disk.name for disk in vm.spec.disks}
    images = {d.name: cache.path(d.sha256) for d in status.disks if d.name in disks}
    missing = sorted(name for name, path in images.items() if not path.is_file())
    if missing:
        raise PermanentError(
            f"{where}: the images of disk(s) {', '.join(missing)} are not on this host "
            f"(the snapshot is on {status.host}); restoring on another host is not done yet"
        )
    return images
