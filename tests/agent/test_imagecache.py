"""The image cache against a real HTTP server on 127.0.0.1: download once, verify, reuse,
and leave nothing behind when a download fails."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import lzma
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.conftest import ImageServer
from kubevisor.agent.imagecache import ImageCache
from kubevisor.api.virtualmachine import ImageCompression
from kubevisor.drivers.base import PermanentError, RetryableError


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_in(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_first_fetch_downloads_and_verifies_the_second_makes_no_request(
    tmp_path: Path, image_server: ImageServer, small_qcow2: bytes
) -> None:
    image_server.files["/small.qcow2"] = small_qcow2
    cache = ImageCache(tmp_path)
    url, digest = image_server.url("/small.qcow2"), sha256(small_qcow2)

    first = asyncio.run(cache.fetch(url, digest))
    second = asyncio.run(cache.fetch(url, digest))

    assert first == second == tmp_path / "sha256" / digest
    assert first.read_bytes() == small_qcow2
    assert image_server.requests == ["/small.qcow2"]
    assert files_in(tmp_path) == [first]


def test_concurrent_fetches_of_one_digest_share_one_download(
    tmp_path: Path, image_server: ImageServer, small_qcow2: bytes
) -> None:
    image_server.files["/small.qcow2"] = small_qcow2
    cache = ImageCache(tmp_path)
    url, digest = image_server.url("/small.qcow2"), sha256(small_qcow2)

    async def both() -> list[Path]:
        return list(await asyncio.gather(*(cache.fetch(url, digest) for _ in range(3))))

    assert len(set(asyncio.run(both()))) == 1
    assert image_server.requests == ["/small.qcow2"]


@pytest.mark.parametrize(
    ("compression", "compress"),
    [
        pytest.param("gzip", gzip.compress, id="gzip"),
        pytest.param("xz", lzma.compress, id="xz"),
    ],
)
def test_a_compressed_image_is_cached_decompressed_under_the_served_files_digest(
    tmp_path: Path,
    image_server: ImageServer,
    small_qcow2: bytes,
    compression: ImageCompression,
    compress: Callable[[bytes], bytes],
) -> None:
    served = compress(small_qcow2)
    image_server.files["/small.qcow2.z"] = served
    cache = ImageCache(tmp_path)

    path = asyncio.run(cache.fetch(image_server.url("/small.qcow2.z"), sha256(served), compression))

    assert path == tmp_path / "sha256" / sha256(served)
    assert path.read_bytes() == small_qcow2


def test_a_wrong_checksum_is_permanent_and_leaves_no_file(
    tmp_path: Path, image_server: ImageServer, small_qcow2: bytes
) -> None:
    image_server.files["/small.qcow2"] = small_qcow2
    wrong = "0" * 64

    with pytest.raises(PermanentError, match=f"expected {wrong}, got {sha256(small_qcow2)}"):
        asyncio.run(ImageCache(tmp_path).fetch(image_server.url("/small.qcow2"), wrong))

    assert files_in(tmp_path) == []


def test_a_connection_closed_mid_body_is_retryable_and_leaves_no_partial(
    tmp_path: Path, image_server: ImageServer, small_qcow2: bytes
) -> None:
    image_server.files["/small.qcow2"] = small_qcow2
    image_server.truncate.add("/small.qcow2")
    url, digest = image_server.url("/small.qcow2"), sha256(small_qcow2)
    cache = ImageCache(tmp_path)

    with pytest.raises(RetryableError):
        asyncio.run(cache.fetch(url, digest))
    assert files_in(tmp_path) == []

    image_server.truncate.clear()
    assert asyncio.run(cache.fetch(url, digest)).read_bytes() == small_qcow2


def test_a_missing_image_is_permanent(tmp_path: Path, image_server: ImageServer) -> None:
    with pytest.raises(PermanentError, match="HTTP 404"):
        asyncio.run(ImageCache(tmp_path).fetch(image_server.url("/missing.qcow2"), "0" * 64))
    assert files_in(tmp_path) == []


def test_an_unreachable_server_is_retryable(tmp_path: Path, image_server: ImageServer) -> None:
    url = image_server.url("/small.qcow2")
    image_server.stop()  # nothing listens on its port any more

    with pytest.raises(RetryableError):
        asyncio.run(ImageCache(tmp_path).fetch(url, "0" * 64))
    assert files_in(tmp_path) == []
