"""The partition tests' cuttable link (`testbed.tcpproxy`), against an echo server on
127.0.0.1."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from kubevisor.testbed.tcpproxy import TcpProxy


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: _echo(c), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()
    server.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(1024):
            conn.sendall(data)


def roundtrip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return sock.recv(1024)


def test_cut_drops_open_connections_and_refuses_new_ones_until_restored(
    echo: tuple[str, int],
) -> None:
    with TcpProxy(echo) as proxy:
        before = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert roundtrip(before, b"ping") == b"ping"

        proxy.cut()
        assert before.recv(1024) == b"", "the open connection is dropped"
        during = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert during.recv(1024) == b"", "a new one is closed at once"
        assert proxy.refused == 1

        proxy.restore()
        after = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert roundtrip(after, b"pong") == b"pong"
        for sock in (before, during, after):
            sock.close()
