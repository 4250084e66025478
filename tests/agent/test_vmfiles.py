"""VM files on the host: a disk with a `source` is an overlay on the image cache's file;
on shared storage the overlays and their images are in the shared directory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.conftest import LOOPBACK, ImageServer
from kubevisor.agent.hostpaths import HostPathRefused
from kubevisor.agent.imagecache import ImageCache
from kubevisor.agent.vmfiles import ImageRejected, VmFiles
from kubevisor.api.hypervisorhost import SharedStorage
from kubevisor.api.virtualmachine import VirtualMachine, VmStorage


def image_info(path: str) -> dict[str, Any]:
    """What `qemu-img info` says of the file at `path`."""
    done = subprocess.run(
        ["qemu-img", "info", "--output=json", path], check=True, capture_output=True, text=True
    )
    return dict(json.loads(done.stdout))


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

    info = image_info(prepared.disk_paths["root"])
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
    backing = image_info(str(overlay))["backing-filename"]
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


# -- base images are vetted before they back an overlay -------------------------------------


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def self_contained_qcow2(directory: Path) -> Path:
    qemu_img("create", "-q", "-f", "qcow2", str(directory / "image"), "1M")
    return directory / "image"


def with_backing_file(directory: Path) -> Path:
    """A qcow2 whose reads fall through to a host file (here /etc/hostname)."""
    qemu_img(
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "/etc/hostname",
        "-F",
        "raw",
        str(directory / "image"),
        "1M",
    )
    return directory / "image"


def with_data_file(directory: Path) -> Path:
    """A qcow2 whose guest data lives in another host file."""
    data = directory / "elsewhere.raw"
    qemu_img(
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        f"data_file={data},data_file_raw=on",
        str(directory / "image"),
        "1M",
    )
    return directory / "image"


def raw(directory: Path) -> Path:
    (directory / "image").write_bytes(os.urandom(64 * 1024))
    return directory / "image"


def vmdk_on_a_fifo(directory: Path) -> Path:
    """A vmdk descriptor whose extent is a FIFO: qemu-img probing it would hang."""
    os.mkfifo(directory / "fifo")
    (directory / "image").write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        f'createType="monolithicFlat"\n\nRW 2048 FLAT "{directory / "fifo"}" 0\n'
    )
    return directory / "image"


REFUSED = [
    pytest.param(
        with_backing_file, "qcow2", "it names a backing file (/etc/hostname)", id="backing-file"
    ),
    pytest.param(with_data_file, "qcow2", "it names an external data file (", id="data-file"),
    pytest.param(raw, "qcow2", "it is a raw image, declared qcow2", id="raw-declared-qcow2"),
    pytest.param(
        self_contained_qcow2, "raw", "it is a qcow2 image, declared raw", id="qcow2-declared-raw"
    ),
    pytest.param(vmdk_on_a_fifo, "raw", "it is a vmdk image, declared raw", id="vmdk-declared-raw"),
]


@pytest.mark.parametrize(("make", "declared", "says"), REFUSED)
def test_a_downloaded_image_that_is_not_a_self_contained_image_of_its_format_is_refused(
    tmp_path: Path,
    image_server: ImageServer,
    make: Callable[[Path], Path],
    declared: str,
    says: str,
) -> None:
    (tmp_path / "made").mkdir()
    data = make(tmp_path / "made").read_bytes()
    image_server.files["/image"] = data
    digest = hashlib.sha256(data).hexdigest()
    source = {"url": image_server.url("/image"), "sha256": digest, "format": declared}
    files = vm_files(tmp_path / "state", tmp_path / "images")

    with pytest.raises(ImageRejected) as raised:
        asyncio.run(files.prepare(_vm([{"name": "root", "source": source}]), "uid-1"))

    assert raised.value.reason == "ImageRejected"
    assert str(raised.value).startswith(f"disk root: image {digest} refused: {says}")
    assert list((tmp_path / "state" / "vms" / "uid-1").glob("disk-*")) == []


def with_base_image(tmp_path: Path, make: Callable[[Path], Path]) -> VmFiles:
    """VM files whose image directory holds `make`'s image as base.img."""
    images = tmp_path / "images"
    images.mkdir()
    make(images).rename(images / "base.img")
    return vm_files(tmp_path / "state", images)


IMAGE_DIRECTORY_REFUSED = [
    pytest.param(with_backing_file, "it names a backing file (/etc/hostname)", id="backing-file"),
    pytest.param(with_data_file, "it names an external data file (", id="data-file"),
    pytest.param(
        vmdk_on_a_fifo, "it is a vmdk image: only qcow2 and raw images back overlays", id="vmdk"
    ),
]


@pytest.mark.parametrize(("make", "says"), IMAGE_DIRECTORY_REFUSED)
def test_an_image_directory_image_referencing_other_files_is_refused(
    tmp_path: Path, make: Callable[[Path], Path], says: str
) -> None:
    files = with_base_image(tmp_path, make)

    with pytest.raises(ImageRejected) as raised:
        asyncio.run(files.prepare(_vm([{"name": "root", "image": "base.img"}]), "uid-1"))

    assert str(raised.value).startswith(f"disk root: image base.img refused: {says}")


@pytest.mark.parametrize(
    ("make", "format"),
    [pytest.param(self_contained_qcow2, "qcow2", id="qcow2"), pytest.param(raw, "raw", id="raw")],
)
def test_a_self_contained_image_directory_image_backs_the_overlay_in_its_format(
    tmp_path: Path, make: Callable[[Path], Path], format: str
) -> None:
    files = with_base_image(tmp_path, make)

    prepared = asyncio.run(files.prepare(_vm([{"name": "root", "image": "base.img"}]), "uid-1"))

    info = image_info(prepared.disk_paths["root"])
    assert (info["backing-filename"], info["backing-filename-format"]) == (
        str(tmp_path / "images" / "base.img"),
        format,
    )


def test_an_image_directory_symlink_leading_out_of_it_is_refused(tmp_path: Path) -> None:
    outside = self_contained_qcow2(tmp_path)
    files = with_base_image(tmp_path, raw)
    (tmp_path / "images" / "escape.img").symlink_to(outside)
    (tmp_path / "images" / "alias.img").symlink_to("base.img")

    with pytest.raises(HostPathRefused) as raised:
        asyncio.run(files.prepare(_vm([{"name": "root", "image": "escape.img"}]), "uid-1"))
    prepared = asyncio.run(files.prepare(_vm([{"name": "root", "image": "alias.img"}]), "uid-2"))

    assert str(raised.value) == (
        f"disks[root].image: {tmp_path}/images/escape.img resolves to {outside}, outside the "
        f"directories this host allows ({tmp_path}/images; the agent's --image-dir)"
    )
    assert raised.value.reason == "HostPathRefused"
    backing = image_info(prepared.disk_paths["root"])["backing-filename"]
    assert backing == str(tmp_path / "images" / "base.img"), "a symlink within is resolved"
