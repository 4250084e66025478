"""Fixtures of the agent tests: a fake clock for the work queue (its `call_later`), advanced
by the tests, an HTTP server of images for the image cache, and `until`, the event loop's
`eventually`."""

from __future__ import annotations

import heapq
import http.server
import ipaddress
import itertools
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from kubevisor.core import destinations

T = TypeVar("T")

LOOPBACK = destinations.Policy(
    allowed_networks=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1"))
)
"""Image downloads from the test servers on this host: allowed as an admin would."""


class FakeClock:
    """A `call_later` whose time moves only when a test calls `advance`."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (self.now + delay, next(self._order), callback))

    def advance(self, seconds: float) -> None:
        """Move time on, running the callbacks that fall due, in order."""
        self.now += seconds
        while self._timers and self._timers[0][0] <= self.now:
            heapq.heappop(self._timers)[2]()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class ImageServer:
    """An HTTP server on `address` (127.0.0.1), or HTTPS with `tls`, serving `files` by
    path, logging every request path.

    A path in `truncate` is answered with its full Content-Length but only half the body,
    then the connection is closed; a path in `gates` gets half its body, then the rest once
    the test sets the gate; a path in `errors` is answered with that HTTP status (and the
    reason phrase in `phrases`, if any); a path
    in `redirects` with a 302 to that Location; an unknown path is a 404.
    """

    def __init__(self, address: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.gates: dict[str, threading.Event] = {}
        self.errors: dict[str, int] = {}
        self.phrases: dict[str, str] = {}
        self.redirects: dict[str, str] = {}
        self.requests: list[str] = []
        self.hosts: list[str] = []
        """The Host header of each request."""
        self.scheme = "https" if tls else "http"
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                server.hosts.append(self.headers.get("Host", ""))
                body = server.files.get(self.path)
                if self.path in server.errors:
                    self.send_error(server.errors[self.path], server.phrases.get(self.path))
                    return
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.truncate:
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                gate = server.gates.get(self.path)
                if gate is not None:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    gate.wait(timeout=60)
                    self.wfile.write(body[len(body) // 2 :])
                    return
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer((address, 0), Handler)
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.address = address
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str, *, host: str | None = None) -> str:
        """The URL of `path`, by `host` (a name) or by the server's address."""
        return f"{self.scheme}://{host or self.address}:{self.port}{path}"

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving and close the port (safe to call twice)."""
        for gate in self.gates.values():
            gate.set()  # closing waits for every handler
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    with ImageServer() as server:
        yield server


@pytest.fixture(scope="session")
def small_qcow2(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a 1 MiB qcow2 image made by qemu-img."""
    path = tmp_path_factory.mktemp("image") / "small.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1M"], check=True)
    return path.read_bytes()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real filesystem to fill (the tests run as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
