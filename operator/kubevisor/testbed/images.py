"""Bootable disk images of the tiny guest, and one served over HTTP for `kubevisor dev up`.

`build_bootable_image` turns the tiny guest (testbed.guest) into a disk a VM boots from
without a kernel of the host: a FAT filesystem image holding the kernel, the initramfs and
a SYSLINUX configuration, made bootable by `syslinux --install` (no loop device, no mount,
no root), converted to qcow2. The FAT has 8 reserved sectors, so the guest's disk token at
byte 512 (testbed.guest) lands in sectors no filesystem structure uses.

`serve_demo_image` serves one over `python -m http.server` on 127.0.0.1 and writes
`examples/from-image.yaml` into the state directory: a VirtualMachine whose boot disk comes
from that URL. The agents download it into their image caches like any other image source.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from kubevisor.api.wire import API_VERSION
from kubevisor.testbed.guest import Guest

IMAGE = "tiny-guest.qcow2"
TOOLS = ("mkfs.vfat", "mcopy", "syslinux", "qemu-img")
HOW_TO_INSTALL = "apt-get install dosfstools mtools syslinux qemu-utils (or run hack/setup.sh)"
FAT_KIB = 32768


@dataclass(frozen=True, slots=True)
class ServedImage:
    url: str
    sha256: str
    manifest: Path
    pid: int


class ImageBuildError(RuntimeError):
    """A tool the image needs is missing or failed."""


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def build_bootable_image(guest: Guest, target: Path) -> Path:
    """`target` (qcow2): a disk that boots `guest` with SYSLINUX; kept if already there."""
    if target.is_file():
        return target
    if missing := missing_tools():
        raise ImageBuildError(f"missing {', '.join(missing)}: {HOW_TO_INSTALL}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        fat = Path(tmp) / "disk.img"
        config = Path(tmp) / "syslinux.cfg"
        config.write_text(
            "DEFAULT guest\nPROMPT 0\nTIMEOUT 0\nLABEL guest\n"
            f"  LINUX /vmlinuz\n  INITRD /initrd.gz\n  APPEND {guest.cmdline}\n"
        )
        _run("mkfs.vfat", "-C", "-R", "8", "-n", "KUBEVISOR", str(fat), str(FAT_KIB))
        _run("mcopy", "-i", str(fat), str(guest.kernel), str(guest.initrd), str(config), "::/")
        _run("syslinux", "--install", str(fat))
        partial = Path(tmp) / "disk.qcow2"
        _run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(fat), str(partial))
        partial.replace(target)
    return target


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageBuildError(f"{' '.join(argv[:2])} failed: {done.stderr.strip()}")


def serve_demo_image(state_dir: Path, guest: Guest, *, port: int, log: Path) -> ServedImage:
    image = build_bootable_image(guest, state_dir / "served-images" / IMAGE)
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
        "# Written by `kubevisor dev up`: a VM that boots from a disk downloaded from an\n"
        "# image URL (served on 127.0.0.1 by the dev stack), verified and cached on its host.\n"
        + yaml.safe_dump(example_vm(url, sha256), sort_keys=False)
    )
    return ServedImage(url=url, sha256=sha256, manifest=manifest, pid=process.pid)


def example_vm(url: str, sha256: str) -> dict[str, object]:
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualMachine",
        "metadata": {"name": "from-image", "namespace": "default"},
        "spec": {
            "memory": {"size": "128Mi"},
            "disks": [{"name": "root", "source": {"url": url, "sha256": sha256}}],
        },
    }
