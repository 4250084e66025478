"""A disk image served over HTTP on 127.0.0.1, for `kubevisor dev up`'s image example.

`serve_demo_image` builds a small qcow2 with `qemu-img` (once; its digest is what the
example's `source.sha256` says), starts `python -m http.server` on a free port of
127.0.0.1 in the background and writes `examples/from-image.yaml` into the state
directory: a VirtualMachine whose disk comes from that URL. The agents download it into
their image caches like any other image source.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

IMAGE = "tiny-disk.qcow2"


@dataclass(frozen=True, slots=True)
class ServedImage:
    url: str
    sha256: str
    manifest: Path
    pid: int


def build_image(directory: Path, *, size: str = "64M") -> Path:
    """A blank qcow2 image of `size` in `directory` (kept if already there)."""
    directory.mkdir(parents=True, exist_ok=True)
    image = directory / IMAGE
    if not image.exists():
        partial = directory / (IMAGE + ".partial")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(partial), size], check=True)
        partial.replace(image)
    return image


def serve_demo_image(state_dir: Path, *, port: int, log: Path) -> ServedImage:
    image = build_image(state_dir / "served-images")
    sha256 = hashlib.sha256(image.read_bytes()).hexdigest()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "http.server",
                str(port),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(image.parent),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/{IMAGE}"
    manifest = state_dir / "examples" / "from-image.yaml"
    manifest.parent.mkdir(exist_ok=True)
    manifest.write_text(
        "# Written by `kubevisor dev up`: a VM whose disk is downloaded from an image URL\n"
        "# (served on 127.0.0.1 by the dev stack), verified and cached on its host.\n"
        + yaml.safe_dump(example_vm(url, sha256), sort_keys=False)
    )
    return ServedImage(url=url, sha256=sha256, manifest=manifest, pid=process.pid)


def example_vm(url: str, sha256: str) -> dict[str, object]:
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": "from-image", "namespace": "default"},
        "spec": {
            "memory": {"size": "128Mi"},
            "disks": [{"name": "root", "source": {"url": url, "sha256": sha256}}],
        },
    }
