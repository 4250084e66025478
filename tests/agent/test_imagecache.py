"""The image cache against a real HTTP server on 127.0.0.1: download once, verify, reuse,
report progress and failures (with their reasons), leave nothing behind when a download
fails (a full filesystem included, on a real tmpfs), and evict unused images."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import lzma
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.conftest import LOOPBACK, ImageServer
from harness import until
from kubevisor.agent.imagecache import (
    ImageCache,
    PermanentPullError,
    Pull,
    RetryablePullError,
)
from kubevisor.api.virtualmachine import ImageCompression
from kubevisor.drivers.base import PermanentError, RetryableError

MIB = 1 << 20


COMPRESSIONS = [
    pytest.param("gzip", gzip.compress, id="gzip"),
    pytest.param("xz", lzma.compress, id="xz"),
]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_in(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_first_fetch_downloads_and_verifies_the_second_makes_no_request(
    tmp_path: Path, image_server: ImageServer, small_qcow2: bytes
) -> None:
    image_server.files["/small.qcow2"] = small_qcow2
    cache = ImageCache(tmp_path, policy=LOOPBACK)
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
    cache = ImageCache(tmp_path, policy=LOOPBACK)
    url, digest = image_server.url("/small.qcow2"), sha256(small_qcow2)

    async def both() -> list[Path]:
        return list(await asyncio.gather(*(cache.fetch(url, digest) for _ in range(3))))

    assert len(set(asyncio.run(both()))) == 1
    assert image_server.requests == ["/small.qcow2"]


@pytest.mark.parametrize(("compression", "compress"), COMPRESSIONS)
def test_a_compressed_image_is_cached_decompressed_under_the_served_files_digest(
    tmp_path: Path,
    image_server: ImageServer,
    small_qcow2: bytes,
    compression: ImageCompression,
    compress: Callable[[bytes], bytes],
) -> None:
    served = compress(small_qcow2)
    image_server.files["/small.qcow2.z"] = served
    cache = ImageCache(tmp_path, policy=LOOPBACK)

    path = asyncio.run(cache.fetch(image_server.url("/small.qcow2.z"), sha256(served), compression))

    assert path == tmp_path / "sha256" / sha256(served)
    assert path.read_bytes() == small_qcow2


def test_a_wrong_checksum_is_permanent_and_leaves_no_file(
    tmp_path: Path, image_server: ImageServer, small_qcow2: bytes
) -> None:
    image_server.files["/small.qcow2"] = small_qcow2
    wrong = "0" * 64

    with pytest.raises(PermanentError, match=f"expected {wrong}, got {sha256(small_qcow2)}") as e:
        asyncio.run(
            ImageCache(tmp_path, policy=LOOPBACK).fetch(image_server.url("/small.qcow2"), wrong)
        )

    assert isinstance(e.value, PermanentPullError)
    assert e.value.reason == "ChecksumMismatch"
    assert files_in(tmp_path) == []


def test_a_connection_closed_mid_body_is_retryable_and_leaves_no_partial(
    tmp_path: Path, image_server: ImageServer, small_qcow2: bytes
) -> None:
    image_server.files["/small.qcow2"] = small_qcow2
    image_server.truncate.add("/small.qcow2")
    url, digest = image_server.url("/small.qcow2"), sha256(small_qcow2)
    cache = ImageCache(tmp_path, policy=LOOPBACK)

    with pytest.raises(RetryableError):
        asyncio.run(cache.fetch(url, digest))
    assert files_in(tmp_path) == []

    image_server.truncate.clear()
    assert asyncio.run(cache.fetch(url, digest)).read_bytes() == small_qcow2


def test_a_missing_image_is_permanent(tmp_path: Path, image_server: ImageServer) -> None:
    with pytest.raises(PermanentError, match="HTTP 404"):
        asyncio.run(
            ImageCache(tmp_path, policy=LOOPBACK).fetch(
                image_server.url("/missing.qcow2"), "0" * 64
            )
        )
    assert files_in(tmp_path) == []


def test_an_unreachable_server_is_retryable(tmp_path: Path, image_server: ImageServer) -> None:
    url = image_server.url("/small.qcow2")
    image_server.stop()  # nothing listens on its port any more

    with pytest.raises(RetryableError):
        asyncio.run(ImageCache(tmp_path, policy=LOOPBACK).fetch(url, "0" * 64))
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    ("serve", "compression", "error", "reason", "message"),
    [
        pytest.param(
            {"status": 404}, "none", PermanentPullError, "ImageNotFound", "HTTP 404", id="not-found"
        ),
        pytest.param(
            {"status": 410}, "none", PermanentPullError, "ImageNotFound", "HTTP 410", id="gone"
        ),
        pytest.param(
            {"status": 403},
            "none",
            PermanentPullError,
            "DownloadRefused",
            "HTTP 403",
            id="forbidden",
        ),
        pytest.param(
            {"status": 503},
            "none",
            RetryablePullError,
            "DownloadFailed",
            "HTTP 503",
            id="unavailable",
        ),
        pytest.param(
            {"status": 429},
            "none",
            RetryablePullError,
            "DownloadFailed",
            "HTTP 429",
            id="too-many-requests",
        ),
        pytest.param(
            {"truncate": True},
            "none",
            RetryablePullError,
            "DownloadFailed",
            "truncated",
            id="truncated",
        ),
        pytest.param(
            {}, "gzip", PermanentPullError, "CorruptImage", "not a whole gzip stream", id="not-gzip"
        ),
    ],
)
def test_each_failure_has_its_reason_and_leaves_no_file(
    tmp_path: Path,
    image_server: ImageServer,
    small_qcow2: bytes,
    serve: dict[str, object],
    compression: ImageCompression,
    error: type[Exception],
    reason: str,
    message: str,
) -> None:
    image_server.files["/image"] = small_qcow2
    if "status" in serve:
        image_server.errors["/image"] = int(serve["status"])  # type: ignore[call-overload]
    if serve.get("truncate"):
        image_server.truncate.add("/image")
    url = image_server.url("/image")

    with pytest.raises(error, match=message) as raised:
        asyncio.run(
            ImageCache(tmp_path, policy=LOOPBACK).fetch(url, sha256(small_qcow2), compression)
        )

    assert raised.value.reason == reason  # type: ignore[attr-defined]
    assert url in str(raised.value)
    assert files_in(tmp_path) == []


def test_a_pull_runs_in_the_background_reports_progress_and_is_shared(
    tmp_path: Path, image_server: ImageServer
) -> None:
    image = os.urandom(4 * MIB)
    image_server.files["/big.raw"] = image
    gate = image_server.gates["/big.raw"] = threading.Event()
    url, digest = image_server.url("/big.raw"), sha256(image)

    async def main() -> None:
        done = asyncio.Event()
        cache = ImageCache(tmp_path, policy=LOOPBACK, on_done=lambda sha: done.set())
        first = cache.pull(url, digest)
        assert first == Pull(url=url, received_bytes=0, total_bytes=None, attempts=1, error=None)
        half = await until(
            lambda: (p := cache.pull(url, digest)) and p.received_bytes == 2 * MIB and p,
            what="half the image to arrive",
        )
        assert half.total_bytes == 4 * MIB
        assert cache.pulling() == {digest}
        assert [p.name for p in files_in(tmp_path)] != [digest], "only a partial file so far"
        gate.set()
        await asyncio.wait_for(done.wait(), timeout=30)
        assert cache.pull(url, digest) is None
        assert cache.pulling() == set()

    asyncio.run(main())
    assert image_server.requests == ["/big.raw"], "every pull shared the one download"
    assert files_in(tmp_path) == [tmp_path / "sha256" / digest]


def test_a_failure_is_kept_until_a_new_attempt_is_asked_for(
    tmp_path: Path, image_server: ImageServer, small_qcow2: bytes
) -> None:
    image_server.errors["/image"] = 503
    image_server.files["/image"] = small_qcow2
    url, digest = image_server.url("/image"), sha256(small_qcow2)

    async def main() -> None:
        ended: asyncio.Queue[str] = asyncio.Queue()
        cache = ImageCache(tmp_path, policy=LOOPBACK, on_done=ended.put_nowait)
        cache.pull(url, digest)
        assert await asyncio.wait_for(ended.get(), timeout=30) == digest
        failed = cache.pull(url, digest)
        assert failed is not None and isinstance(failed.error, RetryablePullError)
        assert (failed.attempts, failed.error.reason) == (1, "DownloadFailed")
        assert image_server.requests == ["/image"], "asking again is no new attempt"
        del image_server.errors["/image"]
        second = cache.pull(url, digest, retry=True)
        assert second is not None and (second.attempts, second.error) == (2, None)
        await asyncio.wait_for(ended.get(), timeout=30)
        assert cache.pull(url, digest) is None

    asyncio.run(main())
    assert image_server.requests == ["/image", "/image"]


def test_a_full_filesystem_is_retryable_says_which_and_leaves_no_partial_file(
    small_fs: Path, image_server: ImageServer
) -> None:
    image = os.urandom(4 * MIB)
    image_server.files["/big.raw"] = image
    cache = ImageCache(small_fs / "cache", policy=LOOPBACK)

    with pytest.raises(RetryablePullError) as raised:
        asyncio.run(cache.fetch(image_server.url("/big.raw"), sha256(image)))

    assert raised.value.reason == "DiskFull"
    message = str(raised.value)
    assert f"no space left in the image cache {small_fs / 'cache' / 'sha256'}" in message
    assert f"(filesystem {small_fs}: 1.0 MiB free of 1.0 MiB)" in message
    assert message.endswith("the image needs 4.0 MiB")
    assert files_in(small_fs) == []


def cached(root: Path, name: str, *, size: int, last_used: float) -> Path:
    path = root / "sha256" / (name * 64)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (last_used, last_used))
    return path


NOW = 2_000_000_000.0
DAY = 86400.0


def test_eviction_removes_unused_images_by_age_and_size_never_one_in_use(
    tmp_path: Path,
) -> None:
    cache = ImageCache(tmp_path, policy=LOOPBACK)
    old_unused = cached(tmp_path, "a", size=100, last_used=NOW - 2 * DAY)
    old_in_use = cached(tmp_path, "b", size=100, last_used=NOW - 3 * DAY)
    recent = cached(tmp_path, "c", size=600, last_used=NOW - 60)
    newest = cached(tmp_path, "d", size=300, last_used=NOW - 10)

    evicted = cache.evict(keep={"b" * 64}, now=NOW, max_bytes=500, max_unused=DAY)

    assert [e.sha256[0] for e in evicted] == ["a", "c"]
    assert not old_unused.exists() and not recent.exists()
    assert old_in_use.exists() and newest.exists()
    assert [e.sha256[0] for e in cache.entries()] == ["b", "d"]


def test_using_a_cached_image_makes_it_recent(
    tmp_path: Path, image_server: ImageServer, small_qcow2: bytes
) -> None:
    """The last use is the file's mtime, which the cache touches with the real clock."""
    digest = sha256(small_qcow2)
    path = cached(tmp_path, "0", size=1, last_used=time.time() - 2 * DAY)
    path.rename(tmp_path / "sha256" / digest)
    cache = ImageCache(tmp_path, policy=LOOPBACK)

    assert cache.pull(image_server.url("/unused"), digest) is None

    assert cache.evict(keep=set(), now=time.time(), max_bytes=1 << 30, max_unused=DAY) == []
    assert image_server.requests == []


def test_eviction_forgets_failed_downloads_no_vm_waits_for(
    tmp_path: Path, image_server: ImageServer
) -> None:
    url = image_server.url("/missing")

    async def main() -> None:
        ended: asyncio.Queue[str] = asyncio.Queue()
        cache = ImageCache(tmp_path, policy=LOOPBACK, on_done=ended.put_nowait)
        for digest in ("a" * 64, "b" * 64):
            cache.pull(url, digest)
            await asyncio.wait_for(ended.get(), timeout=30)
        cache.evict(keep={"a" * 64}, now=time.time(), max_bytes=1 << 30, max_unused=DAY)
        kept, forgotten = cache.pull(url, "a" * 64), cache.pull(url, "b" * 64)
        assert kept is not None and kept.error is not None, "still failed, not tried again"
        assert forgotten is not None and (forgotten.attempts, forgotten.error) == (1, None)
        await asyncio.wait_for(ended.get(), timeout=30)

    asyncio.run(main())
    assert image_server.requests == ["/missing"] * 3


def test_an_image_larger_than_the_hosts_maximum_is_refused_before_its_body(
    tmp_path: Path, image_server: ImageServer
) -> None:
    image = os.urandom(2 * MIB)
    image_server.files["/big.raw"] = image
    policy = dataclasses.replace(LOOPBACK, max_bytes=MIB)

    with pytest.raises(PermanentPullError) as raised:
        asyncio.run(
            ImageCache(tmp_path, policy=policy).fetch(image_server.url("/big.raw"), sha256(image))
        )

    assert raised.value.reason == "ImageTooLarge"
    assert "the image is 2.0 MiB, more than the 1.0 MiB this host accepts" in str(raised.value)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(("compression", "compress"), COMPRESSIONS)
def test_an_archive_that_unpacks_beyond_the_maximum_is_refused_as_it_unpacks(
    tmp_path: Path,
    image_server: ImageServer,
    compression: ImageCompression,
    compress: Callable[[bytes], bytes],
) -> None:
    """A bomb: 64 MiB of zeros pack into a few KiB (the limit is 4 MiB)."""
    bomb = compress(bytes(64 * MIB))
    assert len(bomb) < 128 * 1024
    image_server.files["/bomb"] = bomb
    policy = dataclasses.replace(LOOPBACK, max_bytes=4 * MIB)
    cache = ImageCache(tmp_path, policy=policy)

    with pytest.raises(PermanentPullError) as raised:
        asyncio.run(cache.fetch(image_server.url("/bomb"), sha256(bomb), compression))

    assert raised.value.reason == "ImageTooLarge"
    assert "unpacks to over 4.0 MiB" in str(raised.value)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(("compression", "compress"), COMPRESSIONS)
def test_an_archive_unpacking_to_just_the_maximum_is_cached_whole(
    tmp_path: Path,
    image_server: ImageServer,
    compression: ImageCompression,
    compress: Callable[[bytes], bytes],
) -> None:
    """Many pieces of at most 1 MiB out of each chunk in; none lost at the edges."""
    image = bytes(3 * MIB) + os.urandom(MIB) + bytes(5 * MIB + 7)
    served = compress(image)
    image_server.files["/image.z"] = served
    cache = ImageCache(tmp_path, policy=dataclasses.replace(LOOPBACK, max_bytes=len(image)))

    path = asyncio.run(cache.fetch(image_server.url("/image.z"), sha256(served), compression))

    assert path.read_bytes() == image
