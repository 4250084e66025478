"""VM files on the host: a disk with a `source` is an overlay on the image cache's file;
on shared storage the overlays and their images are in the shared directory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from agent.conftest import LOOPBACK, ImageServer
from kubevisor.agent.imagecache import ImageCache
from kubevisor.agent.vmfiles import VmFiles
from kubevisor.api.hypervisorhost import SharedStorage
from kubevisor.api.virtualmachine import VirtualMachine, VmStorage


def test_a_source_disk_is_an_overlay_on_the_cached_image(
    tmp_path: Path, image_server: ImageServer, small_qcow2: bytes
) -> None:
    image_server.files["/small.qcow2"] = small_qcow2
    digest = hashlib.sha256(small_qcow2).hexdigest()
    source = {"url": image_server.url("/small.qcow2"), "sha256": digest}
    vm = VirtualMachine.model_validate(
        {
            "apiVersion": "kubevisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "pulled"},
            "spec": {"memory": {"size": "64Mi"}, "disks": [{"name": "root", "source": source}]},
        }
    )
    files = vm_files(tmp_path / "state", tmp_path / "images")

    prepared = asyncio.run(files.prepare(vm, "uid-1"))

    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", prepared.disk_paths["root"]],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    cached = tmp_path / "images" / ".cache" / "sha256" / digest
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(cached)
    assert info["backing-filename-format"] == "qcow2"
    assert cached.read_bytes() == small_qcow2
    assert image_server.requests == ["/small.qcow2"]


def vm_files(state_dir: Path, image_dir: Path, **hooks: Any) -> VmFiles:
    """VM files whose image cache downloads from the test servers on this host."""
    cache = ImageCache(image_dir / ".cache", policy=LOOPBACK)
    return VmFiles(state_dir=state_dir, image_dir=image_dir, images=cache, **hooks)


def _vm(disks: list[dict[str, object]]) -> VirtualMachine:
    return VirtualMachine.model_validate(
        {
            "apiVersion": "kubevisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "vm"},
            "spec": {"memory": {"size": "64Mi"}, "disks": disks},
        }
    )


def test_on_shared_storage_overlays_and_their_images_live_in_the_shared_directory(
    tmp_path: Path, image_server: ImageServer, small_qcow2: bytes
) -> None:
    image_server.files["/small.qcow2"] = small_qcow2
    digest = hashlib.sha256(small_qcow2).hexdigest()
    source = {"url": image_server.url("/small.qcow2"), "sha256": digest}
    shared = SharedStorage(name="nfs", path=str(tmp_path / "shared"))
    vm = _vm([{"name": "root", "source": source}])
    one = vm_files(tmp_path / "one", tmp_path / "one-images")
    two = vm_files(tmp_path / "two", tmp_path / "two-images")

    first = asyncio.run(one.prepare(vm, "uid-1", shared=shared))
    # Another host sharing the storage finds the same overlay (and downloads nothing).
    second = asyncio.run(two.prepare(vm, "uid-1", shared=shared))

    overlay = tmp_path / "shared" / "vms" / "uid-1" / "disk-root.qcow2"
    assert first.disk_paths == second.disk_paths == {"root": str(overlay)}
    assert first.storage == VmStorage(location="Shared", shared_storage="nfs")
    assert two.storage("uid-1", shared) == first.storage
    backing = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(overlay)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )["backing-filename"]
    assert backing == str(tmp_path / "shared" / "images" / "sha256" / digest)
    assert image_server.requests == ["/small.qcow2"]
    # The serial log and seed stay on each host.
    assert first.serial_log != second.serial_log

    # Leaving the host (migration, eviction, fencing) keeps the shared overlay...
    one.remove("uid-1")
    assert overlay.is_file()
    # ...deleting the VM removes it.
    two.remove("uid-1", shared=shared)
    assert not overlay.exists()


def test_a_local_overlay_stays_local_after_the_host_declares_shared_storage(
    tmp_path: Path,
) -> None:
    files = VmFiles(state_dir=tmp_path / "state", image_dir=tmp_path / "images")
    vm = _vm([{"name": "data", "size": "1Mi"}])
    local = asyncio.run(files.prepare(vm, "uid-1"))
    shared = SharedStorage(name="nfs", path=str(tmp_path / "shared"))

    again = asyncio.run(files.prepare(vm, "uid-1", shared=shared))

    assert again.disk_paths == local.disk_paths
    assert again.storage == VmStorage(location="Local")
    assert not (tmp_path / "shared" / "vms" / "uid-1").exists()


def test_a_vm_without_disks_is_local_even_on_a_host_with_shared_storage(tmp_path: Path) -> None:
    files = VmFiles(state_dir=tmp_path / "state", image_dir=tmp_path / "images")
    shared = SharedStorage(name="nfs", path=str(tmp_path / "shared"))

    prepared = asyncio.run(files.prepare(_vm([]), "uid-1", shared=shared))

    assert prepared.storage == VmStorage(location="Local")
    assert files.storage("uid-1", shared) is None


def test_the_images_under_a_hosts_overlays_are_counted_until_their_vms_are_removed(
    tmp_path: Path, image_server: ImageServer, small_qcow2: bytes
) -> None:
    image_server.files["/small.qcow2"] = small_qcow2
    digest = hashlib.sha256(small_qcow2).hexdigest()
    source = {"url": image_server.url("/small.qcow2"), "sha256": digest}
    removed: list[str] = []
    used: list[str] = []
    files = vm_files(
        tmp_path / "state", tmp_path / "images", on_remove=removed.append, on_use=used.append
    )
    asyncio.run(files.prepare(_vm([{"name": "a", "source": source}]), "uid-1"))
    two_disks = _vm([{"name": "a", "source": source}, {"name": "b", "source": source}])
    asyncio.run(files.prepare(two_disks, "uid-2"))
    asyncio.run(files.prepare(two_disks, "uid-2"))  # the overlays exist: nothing new uses it
    assert used == [digest] * 3
    on_shared = SharedStorage(name="nfs", path=str(tmp_path / "shared"))
    asyncio.run(files.prepare(_vm([{"name": "a", "source": source}]), "uid-3", shared=on_shared))
    assert files.images_in_use() == Counter({digest: 3}), "the shared overlay uses the shared cache"

    files.remove("uid-2")

    assert files.images_in_use() == Counter({digest: 1})
    assert removed == ["uid-2"]
