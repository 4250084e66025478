"""The dev stack's served image: what it downloads is what its example VM says."""

from __future__ import annotations

import hashlib
import os
import signal
import urllib.request
from pathlib import Path

import yaml

from harness import eventually
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.testbed import images
from kubevisor.testbed.controlplane import free_ports


def test_the_served_image_matches_the_example_vms_source(tmp_path: Path) -> None:
    served = images.serve_demo_image(tmp_path, port=free_ports(1)[0], log=tmp_path / "log")
    try:

        def download() -> bytes | None:
            try:
                with urllib.request.urlopen(served.url, timeout=5) as reply:
                    return bytes(reply.read())
            except OSError:
                return None

        body = eventually(download, timeout=30, what="the image server to answer")
    finally:
        os.killpg(served.pid, signal.SIGTERM)
    vm = VirtualMachine.model_validate(yaml.safe_load(served.manifest.read_text()))
    (disk,) = vm.spec.disks
    assert disk.source is not None
    assert disk.source.url == served.url
    assert disk.source.sha256 == hashlib.sha256(body).hexdigest() == served.sha256
    assert body.startswith(b"QFI\xfb")  # a qcow2 header
