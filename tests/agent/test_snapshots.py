"""The agent's snapshots with fakes for the API and the hypervisor and a real qemu-img:
a stopped VM's overlay is copied into the image cache under its digest; a copy that fails
part-way leaves no file; a hypervisor that cannot copy a running VM says so."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import require
from kubevisor.agent.snapshots import Snapshotter
from kubevisor.agent.vmfiles import VmFiles
from kubevisor.drivers import base
from kubevisor.drivers.snapshots import CopyOutcome, DiskCopy

UID = "11111111-2222-3333-4444-555555555555"


class Api:
    """The VirtualMachineSnapshot calls, recording the statuses applied."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []

    async def apply_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.applied.append(status)


class StoppedHypervisor:
    async def state(self, uuid: str) -> base.DomainInfo:
        raise base.DomainNotFound(uuid)


class RunningHypervisor:
    """A running domain whose disk copy writes part of a file, then fails."""

    async def state(self, uuid: str) -> base.DomainInfo:
        return base.DomainInfo(uuid=uuid, name="web", state=base.DomainState.RUNNING, reason="")


class FailingCopier(RunningHypervisor):
    async def copy_running_disks(
        self, uuid: str, copies: Sequence[DiskCopy], *, quiesce: bool, timeout: float
    ) -> CopyOutcome:
        Path(copies[0].target).write_bytes(b"half an image")
        raise base.RetryableError("disk copy failed: the guest went away")


def vm_object() -> dict[str, Any]:
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": "web",
            "namespace": "n",
            "uid": UID,
            "labels": {"kubevisor.io/host": "hv-a"},
        },
        "spec": {"memory": {"size": "128Mi"}, "disks": [{"name": "data", "size": "16Mi"}]},
    }


def snapshot_object() -> dict[str, Any]:
    return {
        "metadata": {"name": "one", "namespace": "n", "uid": "snap-uid", "generation": 1},
        "spec": {"vm": "web"},
    }


def take(tmp_path: Path, hypervisor: Any) -> tuple[Api, Snapshotter, VmFiles]:
    require(shutil.which("qemu-img") is not None, what="qemu-img", how="apt-get install qemu-utils")
    files = VmFiles(state_dir=tmp_path / "state", image_dir=tmp_path / "images")
    overlay = files.directory(UID) / "disk-data.qcow2"
    overlay.parent.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(overlay), "16M"], check=True)
    api = Api()
    snapshotter = Snapshotter(
        api=api,  # type: ignore[arg-type]
        hypervisor=hypervisor,
        files=files,
        host="hv-a",
        bound_vm=lambda namespace, name: vm_object() if (namespace, name) == ("n", "web") else None,
        shared=lambda: None,
    )

    async def main() -> None:
        await snapshotter.on_snapshot("ADDED", snapshot_object())
        await snapshotter.wait()

    asyncio.run(main())
    return api, snapshotter, files


def cache_files(files: VmFiles) -> list[Path]:
    directory = files.images.root / "sha256"
    return sorted(directory.iterdir()) if directory.is_dir() else []


def test_a_stopped_vms_disk_becomes_an_image_named_by_its_digest(tmp_path: Path) -> None:
    api, snapshotter, files = take(tmp_path, StoppedHypervisor())
    assert [s["phase"] for s in api.applied] == ["InProgress", "Ready"]
    ready = api.applied[-1]
    [disk] = ready["disks"]
    [image] = cache_files(files)
    assert image.name == disk["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert (disk["size"], disk["virtualSize"]) == (image.stat().st_size, 16 << 20)
    assert (ready["consistency"], ready["host"], ready["vmUID"]) == ("Stopped", "hv-a", UID)
    assert snapshotter.records.digests() == {image.name}


def test_a_copy_that_fails_leaves_no_file_and_fails_the_snapshot(tmp_path: Path) -> None:
    api, snapshotter, files = take(tmp_path, FailingCopier())
    assert [s["phase"] for s in api.applied] == ["InProgress", "Failed"]
    failed = api.applied[-1]
    assert failed["reason"] == "CopyFailed"
    assert "the guest went away" in failed["message"]
    assert cache_files(files) == []
    assert snapshotter.records.digests() == set()


def test_a_hypervisor_that_cannot_copy_a_running_vm_says_so(tmp_path: Path) -> None:
    api, _, files = take(tmp_path, RunningHypervisor())
    failed = api.applied[-1]
    assert (failed["phase"], failed["reason"]) == ("Failed", "Unsupported")
    assert "stop the VM first" in failed["message"]
    assert cache_files(files) == []


def test_a_snapshot_of_a_vm_bound_elsewhere_is_left_alone(tmp_path: Path) -> None:
    files = VmFiles(state_dir=tmp_path / "state", image_dir=tmp_path / "images")
    api = Api()
    snapshotter = Snapshotter(
        api=api,  # type: ignore[arg-type]
        hypervisor=StoppedHypervisor(),  # type: ignore[arg-type]
        files=files,
        host="hv-b",
        bound_vm=lambda namespace, name: vm_object(),
        shared=lambda: None,
    )
    asyncio.run(snapshotter.on_snapshot("ADDED", snapshot_object()))
    assert api.applied == []
