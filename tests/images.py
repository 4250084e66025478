"""Disk images to download and the HTTP server that serves them (importable as `images`).

For tests of disks with a `source`: `build_image` makes a small qcow2 image whose content
(and so whose sha256) is new on every call, so no host has it cached yet, plus its gzip
and xz variants. `ImageServer` serves files on 127.0.0.1 from a thread, logs every
request, can slow a path down (so a test can act while a download is under way), and can
be stopped and started again on the same port.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import lzma
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

MiB = 1 << 20
Compression = Literal["none", "gzip", "xz"]


@dataclass(frozen=True)
class ImageFile:
    """One file to serve: `sha256` is what the disk's `source.sha256` must say."""

    path: Path
    compression: Compression
    sha256: str

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass(frozen=True)
class SourceImage:
    """A qcow2 image and its compressed variants, all of the same guest-visible content."""

    virtual_size: int
    files: dict[Compression, ImageFile]

    @property
    def qcow2(self) -> ImageFile:
        return self.files["none"]


def build_image(
    directory: Path, *, virtual_size: int = 16 * MiB, data_size: int = 4 * MiB
) -> SourceImage:
    """A qcow2 image of `virtual_size` holding `data_size` random bytes from 1 MiB on.

    The first MiB stays zero, so the guest's disk token (at offset 512) starts out absent;
    the random data makes the file big enough that a download takes a measurable moment,
    and gives every image a digest of its own.
    """
    directory.mkdir(parents=True, exist_ok=True)
    raw, qcow2 = directory / "image.raw", directory / "image.qcow2"
    with raw.open("wb") as out:
        out.seek(MiB)
        out.write(os.urandom(data_size))
        out.truncate(virtual_size)
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
        check=True,
    )
    raw.unlink()
    data = qcow2.read_bytes()
    compressed: dict[Compression, bytes] = {
        "gzip": gzip.compress(data, compresslevel=1),
        "xz": lzma.compress(data, preset=0),
    }
    files: dict[Compression, ImageFile] = {"none": _image_file(qcow2, "none", data)}
    for compression, blob in compressed.items():
        path = directory / f"image.qcow2.{'gz' if compression == 'gzip' else 'xz'}"
        path.write_bytes(blob)
        files[compression] = _image_file(path, compression, blob)
    return SourceImage(virtual_size=virtual_size, files=files)


def _image_file(path: Path, compression: Compression, data: bytes) -> ImageFile:
    return ImageFile(path=path, compression=compression, sha256=hashlib.sha256(data).hexdigest())


@dataclass
class Request:
    """One request the server received; `sent` and `finished` change while it is served."""

    method: str
    path: str
    started: float
    """Wall-clock time (time.time()) the request arrived."""
    sent: int = 0
    """Body bytes written so far."""
    finished: float | None = None
    """Wall-clock time the whole body had been written; None while sending or if cut off."""


@dataclass
class _Served:
    files: dict[str, Path] = field(default_factory=dict)
    throttles: dict[str, int] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)


class ImageServer:
    """An HTTP server of files on 127.0.0.1, in a thread, for one test.

    Every request is logged (`requests`, `gets`). A throttled path is sent at most
    `bytes_per_second`, in tenths of a second; changing or lifting the throttle takes effect
    on downloads already under way. `stop` cuts off the downloads under way (their clients
    see the connection close early) and closes the port; `start` opens the same port again.
    """

    CHUNK_TIME = 0.1  # seconds of a throttled path's rate sent per write

    def __init__(self) -> None:
        self.port = 0
        self._served = _Served()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._active: set[socket.socket] = set()
        self._idle = threading.Condition(self._lock)
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, path: str, file: Path) -> str:
        """Serve `file` at `path` (e.g. "/root.qcow2"); returns its URL."""
        with self._lock:
            self._served.files[path] = file
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def throttle(self, path: str, bytes_per_second: int | None) -> None:
        """Send `path` at most this fast from now on; None lifts the limit."""
        with self._lock:
            if bytes_per_second is None:
                self._served.throttles.pop(path, None)
            else:
                self._served.throttles[path] = bytes_per_second

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._served.requests)

    def gets(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and r.path == path]

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> ImageServer:
        """Listen on 127.0.0.1: on a free port the first time, on the same port after."""
        self._stopping.clear()
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self, *, timeout: float = 10.0) -> None:
        """Close the port and cut off every download under way; returns once none is
        sending any more (safe to call twice)."""
        if self._httpd is None or self._thread is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=timeout)
        with self._idle:
            for connection in self._active:
                _close(connection)  # a write blocked on a client that stopped reading fails
            if not self._idle.wait_for(lambda: not self._active, timeout=timeout):
                raise AssertionError(
                    f"{len(self._active)} downloads still sending after {timeout}s"
                )
        self._httpd = self._thread = None

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                request = Request("GET", self.path, started=time.time())
                with server._lock:
                    server._served.requests.append(request)
                    file = server._served.files.get(self.path)
                    server._active.add(self.connection)
                try:
                    if file is None:
                        self.send_error(404)
                        return
                    server._send(self, request, file)
                finally:
                    with server._idle:
                        server._active.discard(self.connection)
                        server._idle.notify_all()

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def _send(
        self, handler: http.server.BaseHTTPRequestHandler, request: Request, file: Path
    ) -> None:
        data = file.read_bytes()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        began = time.monotonic()
        sent_at_rate = 0  # bytes sent since `began`, when the current rate took effect
        rate: int | None = None
        while request.sent < len(data):
            with self._lock:
                now_rate = self._served.throttles.get(request.path)
            if now_rate != rate:
                rate, began, sent_at_rate = now_rate, time.monotonic(), 0
            if rate is None:
                chunk = len(data) - request.sent
            else:
                chunk = max(1, int(rate * self.CHUNK_TIME))
                # Pace: this write may start once the bytes before it had their time.
                due = began + sent_at_rate / rate - time.monotonic()
                if due > 0 and self._stopping.wait(due):
                    break
            if self._stopping.is_set():
                break
            piece = data[request.sent : request.sent + chunk]
            try:
                handler.wfile.write(piece)
                handler.wfile.flush()
            except OSError:
                break  # the client went away
            request.sent += len(piece)
            sent_at_rate += len(piece)
        if request.sent == len(data):
            request.finished = time.time()
        else:
            # Cut off: the client sees the body end before Content-Length, as when a
            # server dies mid-download.
            handler.close_connection = True
            _close(handler.connection)


def _close(connection: socket.socket) -> None:
    """Both directions of `connection` shut: its client reads the end of the stream."""
    with contextlib.suppress(OSError):  # the client may have closed it already
        connection.shutdown(socket.SHUT_RDWR)
