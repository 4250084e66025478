"""Certificates for migrations over TLS in the driver tests: one throwaway CA signing a
server pair (for 127.0.0.1, where the test hosts' QEMUs receive migrations) and a client
pair, under the names QEMU loads from qemu.conf's migrate_tls_x509_cert_dir."""

from __future__ import annotations

import shutil
from pathlib import Path

from console.pki import Pki


def write_tls_dir(directory: Path, *copies: Path) -> Path:
    """Fill `directory` (and each of `copies`: hosts of one cluster share the CA) with
    ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem and client-key.pem;
    return it."""
    pki = Pki(directory / ".ca", name="kubevisor-migration-ca")
    server_cert, server_key = pki.issue("kubevisor-host", server=True)
    client_cert, client_key = pki.issue("kubevisor-migration-client", server=False)
    for target in (directory, *copies):
        target.mkdir(parents=True, exist_ok=True)
        for source, name in (
            (pki.ca, "ca-cert.pem"),
            (server_cert, "server-cert.pem"),
            (server_key, "server-key.pem"),
            (client_cert, "client-cert.pem"),
            (client_key, "client-key.pem"),
        ):
            shutil.copyfile(source, target / name)
    shutil.rmtree(directory / ".ca")
    return directory
