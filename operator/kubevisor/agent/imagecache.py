"""The host's content-addressed cache of downloaded base images.

Each digest is downloaded once per host to `root/sha256/<hex>` and reused by every VM
after. A file under that name is always whole and verified: the download goes to a
`.partial` file in the same directory, is hashed while it is written, fsynced and renamed
into place only when the digest matches, and the partial file is removed on any failure.

The download itself (`imagefetch`) reaches only the destinations the host's policy allows
(`core.destinations`), and no image over the policy's size, as served or as unpacked.

A download runs as one background task per digest, shared by every VM that wants the
image, so the agent can report its progress (`pull`) instead of waiting on it; `fetch`
waits. A failure is kept (with its machine-readable `reason`) until someone asks for a
new attempt, so each VM's reconcile reports it and backs off on its own. The last use of
an image is its file's mtime, touched whenever a VM asks for it; `evict` removes unused
images by age and size (`core.cacheeviction` decides which).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import http.client
import io
import logging
import lzma
import os
import shutil
import ssl
import tempfile
import zlib
from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kubevisor.agent import imagefetch
from kubevisor.agent.imagefetch import ImagePullError as ImagePullError
from kubevisor.agent.imagefetch import PermanentPullError as PermanentPullError
from kubevisor.agent.imagefetch import RetryablePullError as RetryablePullError
from kubevisor.api import quantity
from kubevisor.api.virtualmachine import ImageCompression
from kubevisor.core import cacheeviction, destinations

log = logging.getLogger("kubevisor.agent.images")

CHUNK = 1 << 20
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


@dataclass(frozen=True, slots=True)
class Pull:
    """A download into the cache as it stands: running, or failed when `error` is set."""

    url: str
    received_bytes: int
    total_bytes: int | None
    attempts: int
    error: ImagePullError | None


@dataclass(frozen=True, slots=True)
class Entry:
    """One image in the cache."""

    sha256: str
    size: int
    last_used: float
    """The file's mtime, in seconds since the epoch."""


class _Progress:
    """Written by the download's thread, read by the event loop (single assignments)."""

    def __init__(self) -> None:
        self.received = 0
        self.total: int | None = None
        self.cancelled = False


@dataclass(slots=True)
class _Download:
    url: str
    attempts: int
    progress: _Progress
    task: asyncio.Task[None] | None = None
    error: ImagePullError | None = None


class _Decompressor(Protocol):
    """Unpacks a stream a chunk at a time, in pieces of at most CHUNK bytes: a small
    chunk of a crafted gzip or xz file can unpack to gigabytes."""

    def unpack(self, data: bytes, /) -> Iterator[bytes]: ...

    @property
    def eof(self) -> bool: ...


class _Identity:
    eof = True

    def unpack(self, data: bytes, /) -> Iterator[bytes]:
        yield data


class _Gzip:
    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)

    @property
    def eof(self) -> bool:
        return self._inflate.eof

    def unpack(self, data: bytes, /) -> Iterator[bytes]:
        while True:
            piece = self._inflate.decompress(data, CHUNK)
            yield piece
            data = self._inflate.unconsumed_tail
            if not data and len(piece) < CHUNK:
                return


class _Xz:
    def __init__(self) -> None:
        self._lzma = lzma.LZMADecompressor()

    @property
    def eof(self) -> bool:
        return self._lzma.eof

    def unpack(self, data: bytes, /) -> Iterator[bytes]:
        if self._lzma.eof:
            return  # bytes after the stream's end are hashed, not unpacked (as for gzip)
        yield self._lzma.decompress(data, CHUNK)
        while not self._lzma.eof and not self._lzma.needs_input:
            yield self._lzma.decompress(b"", CHUNK)


class _Cancelled(Exception):
    """The agent stopped waiting for the download (it is shutting down)."""


class ImageCache:
    """Downloaded images by sha256, under `root`; one download per digest at a time.

    `on_done(sha256)` is called on the event loop whenever a download ends, whether the
    image is cached now or the attempt failed: the agent re-queues the VMs waiting for it.
    Downloads reach only the destinations `policy` allows, and no image larger than its
    `max_bytes`; `tls` verifies HTTPS servers (default: the system's CAs).
    """

    def __init__(
        self,
        root: Path,
        *,
        policy: destinations.Policy,
        timeout: float = 60.0,
        on_done: Callable[[str], None] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.root = root
        self.policy = policy
        self.timeout = timeout
        self.on_done = on_done
        self.tls = tls
        self._downloads: dict[str, _Download] = {}

    def path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256

    def pull(
        self, url: str, sha256: str, compression: ImageCompression = "none", *, retry: bool = False
    ) -> Pull | None:
        """None when the image is cached (and now counts as just used); otherwise its
        download as it stands, started here if none runs and none failed before, or if
        `retry` asks for a new attempt after a failure.

        `sha256` is the digest of the bytes the URL serves, before decompression (what
        `sha256sum` prints for the published file); the cache holds the decompressed image
        under that digest.
        """
        target = self.path(sha256)
        download = self._downloads.get(sha256)
        if (download is None or download.error is not None) and target.is_file():
            self._downloads.pop(sha256, None)
            _touch(target)
            return None
        if download is None or (download.error is not None and retry):
            attempts = download.attempts + 1 if download is not None else 1
            download = self._start(url, sha256, compression, attempts=attempts)
        return Pull(
            url=download.url,
            received_bytes=download.progress.received,
            total_bytes=download.progress.total,
            attempts=download.attempts,
            error=download.error,
        )

    async def fetch(self, url: str, sha256: str, compression: ImageCompression = "none") -> Path:
        """The cached, verified image of digest `sha256`, downloading it from `url` first
        if this host does not have it yet (a new attempt if the last one failed).

        Raises PermanentPullError for a checksum mismatch, an HTTP 4xx, a destination or
        redirect the policy refuses, an image too large or a corrupt archive,
        RetryablePullError for network errors, truncated bodies, HTTP 5xx and a
        full disk; neither leaves a file behind.
        """
        if self.pull(url, sha256, compression, retry=True) is None:
            return self.path(sha256)
        download = self._downloads[sha256]
        assert download.task is not None
        # Shielded: one waiter giving up must not cancel the download the others share.
        await asyncio.shield(download.task)
        if download.error is not None:
            raise download.error
        return self.path(sha256)

    def pulling(self) -> set[str]:
        """Digests being downloaded now."""
        return {sha for sha, d in self._downloads.items() if d.error is None}

    def entries(self) -> list[Entry]:
        """The cached images, by digest."""
        found = []
        directory = self.root / "sha256"
        if not directory.is_dir():
            return []
        for path in directory.iterdir():
            if path.name.startswith("."):
                continue  # a download's partial file
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # evicted meanwhile
            found.append(Entry(sha256=path.name, size=stat.st_size, last_used=stat.st_mtime))
        return sorted(found, key=lambda e: e.sha256)

    def usage(self) -> int:
        """Bytes the cache takes on disk, downloads in progress included."""
        if not self.root.is_dir():
            return 0
        return sum(p.stat().st_blocks * 512 for p in self.root.rglob("*") if p.is_file())

    def evict(
        self, *, keep: Set[str], now: float, max_bytes: int, max_unused: float
    ) -> list[cacheeviction.CachedFile]:
        """Remove the unused images `core.cacheeviction` picks and return them. `keep` are the
        digests VMs here use or wait for; images being downloaded are kept too, and failed
        downloads of other digests are forgotten."""
        protected = set(keep) | self.pulling()
        chosen = cacheeviction.choose(
            [
                cacheeviction.CachedFile(
                    sha256=e.sha256,
                    size=e.size,
                    last_used=e.last_used,
                    in_use=e.sha256 in protected,
                )
                for e in self.entries()
            ],
            now=now,
            max_bytes=max_bytes,
            max_unused=max_unused,
        )
        for sha256 in [s for s, d in self._downloads.items() if d.error and s not in keep]:
            del self._downloads[sha256]  # a failure no VM waits for any more
        for image in chosen:
            self.path(image.sha256).unlink(missing_ok=True)
            log.info(
                "evicted image sha256:%s (%d bytes, unused for %.0fs)",
                image.sha256,
                image.size,
                now - image.last_used,
            )
        if chosen:
            log.info(
                "image cache eviction freed %d bytes (%d images)",
                sum(i.size for i in chosen),
                len(chosen),
            )
        return chosen

    def _start(
        self, url: str, sha256: str, compression: ImageCompression, *, attempts: int
    ) -> _Download:
        download = _Download(url=url, attempts=attempts, progress=_Progress())
        self._downloads[sha256] = download
        download.task = asyncio.get_running_loop().create_task(
            self._run(sha256, download, compression), name=f"pull-{sha256[:12]}"
        )
        log.info("downloading image sha256:%s from %s (attempt %d)", sha256, url, attempts)
        return download

    async def _run(self, sha256: str, download: _Download, compression: ImageCompression) -> None:
        try:
            await asyncio.to_thread(
                _download,
                _Fetch(url=download.url, policy=self.policy, timeout=self.timeout, tls=self.tls),
                sha256=sha256,
                compression=compression,
                target=self.path(sha256),
                progress=download.progress,
            )
        except asyncio.CancelledError:
            # The thread stops at its next chunk and removes its partial file.
            download.progress.cancelled = True
            if self._downloads.get(sha256) is download:
                del self._downloads[sha256]
            raise
        except (RetryablePullError, PermanentPullError) as error:
            download.error = error
            log.warning("image sha256:%s: %s", sha256, error)
        except Exception as error:
            # A bug must not leave the download "running" for ever: report it as retryable.
            log.exception("image sha256:%s: download failed", sha256)
            download.error = RetryablePullError(f"download of {download.url} failed: {error}")
        else:
            if self._downloads.get(sha256) is download:
                del self._downloads[sha256]
            log.info("cached image sha256:%s (%d bytes)", sha256, download.progress.received)
        if self.on_done is not None:
            self.on_done(sha256)


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError as error:
        log.warning("cannot mark %s as used: %s", path, error)


def _decompressor(compression: ImageCompression) -> _Decompressor:
    if compression == "gzip":
        return _Gzip()
    if compression == "xz":
        return _Xz()
    return _Identity()


@dataclass(frozen=True, slots=True)
class _Fetch:
    """Where a download comes from and the rules it keeps."""

    url: str
    policy: destinations.Policy
    timeout: float
    tls: ssl.SSLContext | None


def _download(
    fetch: _Fetch,
    *,
    sha256: str,
    compression: ImageCompression,
    target: Path,
    progress: _Progress,
) -> None:
    """Runs in a worker thread: the blocking download, verification and rename."""
    try:
        _write_file(fetch, sha256=sha256, compression=compression, target=target, progress=progress)
    except OSError as error:
        # Writing the cache failed (the network's errors are RetryablePullErrors already).
        if error.errno in FULL:
            raise RetryablePullError(
                _disk_full(
                    url=fetch.url, directory=target.parent, needs=_needs(compression, progress)
                ),
                reason="DiskFull",
            ) from error
        raise RetryablePullError(
            f"download of {fetch.url} failed writing the image cache: {error}"
        ) from error


def _write_file(
    fetch: _Fetch,
    *,
    sha256: str,
    compression: ImageCompression,
    target: Path,
    progress: _Progress,
) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{sha256}.", suffix=".partial")
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            _write_verified(
                fetch, sha256=sha256, compression=compression, out=out, progress=progress
            )
            out.flush()
            os.fsync(out.fileno())
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    # The rename is durable only once the directory entry is on disk too.
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _write_verified(
    fetch: _Fetch,
    *,
    sha256: str,
    compression: ImageCompression,
    out: io.BufferedWriter,
    progress: _Progress,
) -> None:
    """Download into `out`; a local write error (OSError) propagates as it is."""
    url, limit = fetch.url, fetch.policy.max_bytes
    hasher = hashlib.sha256()
    decompressor = _decompressor(compression)
    corrupt: str | None = None
    written = 0
    with imagefetch.get(url, policy=fetch.policy, timeout=fetch.timeout, tls=fetch.tls) as response:
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit():
            progress.total = int(length)
            if progress.total > limit:
                raise _too_large(url, f"is {quantity.in_mib(progress.total)}", limit)
        while True:
            if progress.cancelled:
                raise _Cancelled(url)
            try:
                # read1: whatever has arrived, so progress moves with a slow server too.
                chunk = response.read1(CHUNK)
            except (http.client.HTTPException, OSError) as error:
                raise RetryablePullError(f"download of {url} failed: {error}") from error
            if not chunk:
                break
            progress.received += len(chunk)
            if progress.received > limit:
                raise _too_large(url, f"is over {quantity.in_mib(limit)}", limit)
            hasher.update(chunk)
            if corrupt is None:
                try:
                    for data in decompressor.unpack(chunk):
                        written += len(data)
                        if written > limit:
                            raise _too_large(
                                url, f"unpacks to over {quantity.in_mib(limit)}", limit
                            )
                        out.write(data)
                except (zlib.error, lzma.LZMAError) as error:
                    # Keep hashing: a checksum mismatch is the clearer message.
                    corrupt = str(error)
    received = progress.received
    if progress.total is not None and progress.total != received:
        raise RetryablePullError(
            f"download of {url} truncated: {received} of {progress.total} bytes"
        )
    digest = hasher.hexdigest()
    if digest != sha256:
        raise PermanentPullError(
            f"download of {url}: sha256 mismatch, expected {sha256}, got {digest}",
            reason="ChecksumMismatch",
        )
    if corrupt is not None or not decompressor.eof:
        raise PermanentPullError(
            f"download of {url} matches its sha256 but is not a whole {compression} "
            f"stream: {corrupt or 'it ends early'}",
            reason="CorruptImage",
        )


def _too_large(url: str, size: str, limit: int) -> PermanentPullError:
    return PermanentPullError(
        f"download of {url} refused: the image {size}, more than the {quantity.in_mib(limit)} this "
        f"host accepts (agent flag --image-cache-max-size)",
        reason="ImageTooLarge",
    )


def _needs(compression: ImageCompression, progress: _Progress) -> str | None:
    if progress.total is None:
        return None
    if compression == "none":
        return f"the image needs {quantity.in_mib(progress.total)}"
    return f"the image is {quantity.in_mib(progress.total)} {compression}-compressed, more unpacked"


def _disk_full(*, url: str, directory: Path, needs: str | None) -> str:
    """Which filesystem is full, how full, and what the image needs when known."""
    mount = directory
    while not mount.is_mount() and mount != mount.parent:
        mount = mount.parent
    try:
        usage = shutil.disk_usage(directory)
        space = f"{quantity.in_mib(usage.free)} free of {quantity.in_mib(usage.total)}"
    except OSError:
        space = "free space unknown"
    message = (
        f"download of {url}: no space left in the image cache {directory} "
        f"(filesystem {mount}: {space})"
    )
    return f"{message}; {needs}" if needs else message
