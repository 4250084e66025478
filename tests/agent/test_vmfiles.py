"""VM files on the host: a disk with a `source` is an overlay on the image cache's file."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from pathlib import Path

from agent.conftest import ImageServer
from kubevisor.agent.vmfiles import VmFiles
from kubevisor.api.virtualmachine import VirtualMachine


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
    files = VmFiles(state_dir=tmp_path / "state", image_dir=tmp_path / "images")

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
