"""Certificates for the TLS hops in tests (console, image server, migration): one throwaway
CA from `testbed.pki` signing serving and client certificates."""

from __future__ import annotations

from pathlib import Path

from kubevisor.testbed.pki import Ca


class Pki:
    """A CA in `directory` (`ca` is its certificate) and `issue` for the certificates it signs."""

    def __init__(self, directory: Path, name: str = "kubevisor-console-ca") -> None:
        self.authority = Ca.create(directory, name)
        self.dir = directory
        self.ca = self.authority.cert

    def issue(
        self, name: str, *, server: bool, addresses: tuple[str, ...] = ("127.0.0.1",)
    ) -> tuple[Path, Path]:
        """A serving certificate for `name`, 127.0.0.1 and `addresses`, or a client one."""
        return self.authority.issue(name, server=server, hosts=(name, "127.0.0.1", *addresses))
