"""The host's content-addressed cache of downloaded base images.

`VmFiles` asks it for a disk's `source` image; each digest is downloaded once per host to
`root/sha256/<hex>` and reused by every VM after. A file under that name is always whole
and verified: the download goes to a `.partial` file in the same directory, is hashed
while it is written, fsynced and renamed into place only when the digest matches, and the
partial file is removed on any failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import io
import lzma
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Protocol

from kubevisor.api.virtualmachine import ImageCompression
from kubevisor.drivers.base import PermanentError, RetryableError

CHUNK = 1 << 20
# Statuses a later attempt can get past; every other 4xx means the request is wrong.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 425, 429})


class _Decompressor(Protocol):
    def decompress(self, data: bytes, /) -> bytes: ...

    @property
    def eof(self) -> bool: ...


class _Identity:
    eof = True

    def decompress(self, data: bytes, /) -> bytes:
        return data


class ImageCache:
    """Downloaded images by sha256, under `root`; one download per digest at a time."""

    def __init__(self, root: Path, *, timeout: float = 60.0) -> None:
        self.root = root
        self.timeout = timeout
        self._locks: dict[str, asyncio.Lock] = {}

    def path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256

    async def fetch(self, url: str, sha256: str, compression: ImageCompression = "none") -> Path:
        """The cached, verified image of digest `sha256`, downloading it from `url` first
        if this host does not have it yet.

        `sha256` is the digest of the bytes the URL serves, before decompression (what
        `sha256sum` prints for the published file); the cache holds the decompressed
        image under that digest. Raises PermanentError for a checksum mismatch, an HTTP
        4xx or a corrupt archive, RetryableError for network errors, truncated bodies and
        HTTP 5xx; neither leaves a file behind.
        """
        target = self.path(sha256)
        if target.is_file():
            return target
        lock = self._locks.setdefault(sha256, asyncio.Lock())
        async with lock:
            # Whoever held the lock before may have downloaded it meanwhile.
            if not target.is_file():
                await asyncio.to_thread(
                    _download,
                    url=url,
                    sha256=sha256,
                    compression=compression,
                    target=target,
                    timeout=self.timeout,
                )
        return target


def _decompressor(compression: ImageCompression) -> _Decompressor:
    if compression == "gzip":
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    if compression == "xz":
        return lzma.LZMADecompressor()
    return _Identity()


def _download(
    *, url: str, sha256: str, compression: ImageCompression, target: Path, timeout: float
) -> None:
    """Runs in a worker thread: the blocking download, verification and rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{sha256}.", suffix=".partial")
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            _write_verified(
                url=url, sha256=sha256, compression=compression, out=out, timeout=timeout
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
    *,
    url: str,
    sha256: str,
    compression: ImageCompression,
    out: io.BufferedWriter,
    timeout: float,
) -> None:
    hasher = hashlib.sha256()
    decompressor = _decompressor(compression)
    corrupt: str | None = None
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            while chunk := response.read(CHUNK):
                received += len(chunk)
                hasher.update(chunk)
                if corrupt is None:
                    try:
                        out.write(decompressor.decompress(chunk))
                    except (zlib.error, lzma.LZMAError) as error:
                        # Keep hashing: a checksum mismatch is the clearer message.
                        corrupt = str(error)
    except urllib.error.HTTPError as error:
        if error.code >= 500 or error.code in RETRYABLE_CLIENT_STATUSES:
            raise RetryableError(f"download of {url}: HTTP {error.code} {error.reason}") from error
        raise PermanentError(f"download of {url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise RetryableError(f"download of {url} failed: {error}") from error
    if length is not None and length.isdigit() and int(length) != received:
        raise RetryableError(f"download of {url} truncated: {received} of {length} bytes")
    digest = hasher.hexdigest()
    if digest != sha256:
        raise PermanentError(f"download of {url}: sha256 mismatch, expected {sha256}, got {digest}")
    if corrupt is not None or not decompressor.eof:
        raise PermanentError(
            f"download of {url} matches its sha256 but is not a whole {compression} "
            f"stream: {corrupt or 'it ends early'}"
        )
