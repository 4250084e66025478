"""Which image files may back an overlay: the format by signature against the declared
one, and what `qemu-img info` reports of backing and data files."""

from __future__ import annotations

from typing import Any

import pytest

from kubevisor.api.virtualmachine import ImageFormat
from kubevisor.core import imagefiles


@pytest.mark.parametrize(
    ("header", "format"),
    [
        pytest.param(b"QFI\xfb\x00\x00\x00\x03" + bytes(504), "qcow2", id="qcow2-v3"),
        pytest.param(b"QFI\xfb\x00\x00\x00\x01" + bytes(504), "qcow", id="qcow-v1"),
        pytest.param(b"KDMV\x01\x00\x00\x00", "vmdk", id="vmdk-sparse"),
        pytest.param(b"# Disk DescriptorFile\nversion=1\n", "vmdk", id="vmdk-descriptor"),
        pytest.param(b"vhdxfile" + bytes(8), "vhdx", id="vhdx"),
        pytest.param(b"conectix" + bytes(8), "vpc", id="vpc"),
        pytest.param(bytes(0x40) + b"\x7f\x10\xda\xbe", "vdi", id="vdi"),
        pytest.param(b"LUKS\xba\xbe\x00\x01", "luks", id="luks"),
        pytest.param(b"QED\x00" + bytes(8), "qed", id="qed"),
        pytest.param(bytes(512), "raw", id="zeros"),
        pytest.param(b"\xeb\x3c\x90mkfs.fat" + bytes(500), "raw", id="fat-boot-sector"),
        pytest.param(b"", "raw", id="empty"),
    ],
)
def test_the_format_is_read_from_the_signature(header: bytes, format: str) -> None:
    assert imagefiles.detect(header) == format


@pytest.mark.parametrize(
    ("detected", "declared", "refused"),
    [
        pytest.param("qcow2", "qcow2", None, id="qcow2-as-declared"),
        pytest.param("raw", "raw", None, id="raw-as-declared"),
        pytest.param("raw", "qcow2", "it is a raw image, declared qcow2", id="raw-declared-qcow2"),
        pytest.param("qcow2", "raw", "it is a qcow2 image, declared raw", id="qcow2-declared-raw"),
        pytest.param("vmdk", "raw", "it is a vmdk image, declared raw", id="vmdk-declared-raw"),
        pytest.param("qcow2", None, None, id="image-directory-qcow2"),
        pytest.param(
            "vmdk",
            None,
            "it is a vmdk image: only qcow2 and raw images back overlays",
            id="image-directory-vmdk",
        ),
    ],
)
def test_a_file_must_be_in_its_declared_format_and_qcow2_or_raw(
    detected: str, declared: ImageFormat | None, refused: str | None
) -> None:
    assert imagefiles.format_refusal(detected, declared=declared) == refused


QCOW2: dict[str, Any] = {
    "format": "qcow2",
    "virtual-size": 1 << 20,
    "format-specific": {"type": "qcow2", "data": {"compat": "1.1", "corrupt": False}},
}


@pytest.mark.parametrize(
    ("info", "format", "refused"),
    [
        pytest.param(QCOW2, "qcow2", None, id="self-contained-qcow2"),
        pytest.param({"format": "raw", "virtual-size": 512}, "raw", None, id="raw"),
        pytest.param(
            {**QCOW2, "backing-filename": "/etc/shadow", "backing-filename-format": "raw"},
            "qcow2",
            "it names a backing file (/etc/shadow)",
            id="backing-file",
        ),
        pytest.param(
            {**QCOW2, "full-backing-filename": "json:{}"},
            "qcow2",
            "it names a backing file (json:{})",
            id="backing-file-only-in-full-name",
        ),
        pytest.param(
            {
                **QCOW2,
                "format-specific": {"type": "qcow2", "data": {"data-file": "/dev/sda"}},
            },
            "qcow2",
            "it names an external data file (/dev/sda)",
            id="data-file",
        ),
        pytest.param(QCOW2, "raw", "qemu-img reads it as 'qcow2', not raw", id="other-format"),
    ],
)
def test_an_image_naming_another_file_is_refused(
    info: dict[str, Any], format: ImageFormat, refused: str | None
) -> None:
    said = imagefiles.info_refusal(info, format=format)
    assert (said if refused is None else said and said[: len(refused)]) == refused
