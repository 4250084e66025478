"""Which image files may back a VM's overlay: self-contained qcow2 and raw images only.

A qcow2 image may name a backing file or an external data file, a vmdk descriptor names
its extents: paths on the host, which QEMU would open for the guest. So before a base
image backs an overlay the agent reads its first bytes (`detect`), refuses a file whose
format is not the declared one (`format_refusal`), and then asks `qemu-img info` in that
format only, never a probed one (probing a vmdk opens its extents), and refuses what it
reports referencing another file (`info_refusal`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubevisor.api.virtualmachine import ImageFormat

HEADER_BYTES = 512
"""What `detect` needs of a file's start."""

BASE_FORMATS: tuple[ImageFormat, ...] = ("qcow2", "raw")

# (offset, magic, format): the signatures QEMU's block drivers probe for.
MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"QFI\xfb\x00\x00\x00\x01", "qcow"),
    (0, b"QFI\xfb", "qcow2"),
    (0, b"QED\x00", "qed"),
    (0, b"KDMV", "vmdk"),
    (0, b"COWD", "vmdk"),
    (0, b"# Disk DescriptorFile", "vmdk"),
    (0, b"vhdxfile", "vhdx"),
    (0, b"conectix", "vpc"),
    (0x40, b"\x7f\x10\xda\xbe", "vdi"),
    (0, b"LUKS\xba\xbe", "luks"),
    (0, b"WithoutFreeSpace", "parallels"),
    (0, b"WithouFreSpacExt", "parallels"),
    (0, b"Bochs Virtual HD Image", "bochs"),
    (0, b"#!/bin/sh\n#V2.0 Format\n", "cloop"),
)


def detect(header: bytes) -> str:
    """The format a file starting with `header` is in: raw when no signature matches."""
    for offset, magic, name in MAGIC:
        if header[offset : offset + len(magic)] == magic:
            return name
    return "raw"


def format_refusal(detected: str, *, declared: ImageFormat | None) -> str | None:
    """Why a file in format `detected` may not back an overlay as `declared` (None: not
    declared, an image from the host's image directory), or None."""
    if declared is not None and detected != declared:
        return f"it is a {detected} image, declared {declared}"
    if detected not in BASE_FORMATS:
        return f"it is a {detected} image: only qcow2 and raw images back overlays"
    return None


def info_refusal(info: Mapping[str, Any], *, format: ImageFormat) -> str | None:
    """Why an image `qemu-img info -f FORMAT --output=json` described so may not back an
    overlay, or None: another format than asked for, a backing file, a data file."""
    if info.get("format") != format:
        return f"qemu-img reads it as {info.get('format')!r}, not {format}"
    backing = info.get("backing-filename") or info.get("full-backing-filename")
    if backing:
        return f"it names a backing file ({backing}); base images must be self-contained"
    specific = info.get("format-specific") or {}
    data = specific.get("data") if isinstance(specific, Mapping) else None
    data_file = data.get("data-file") if isinstance(data, Mapping) else None
    if data_file:
        return f"it names an external data file ({data_file}); base images must be self-contained"
    return None
