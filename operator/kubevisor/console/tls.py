"""TLS contexts for the console hops, and who a verified peer certificate names.

The servers require client certificates from one CA and then check the certificate's
CommonName against a list: a CA may sign more than the one client a hop trusts (the
front proxy's CA, a cluster CA), so the name is what says "this is the API server's
proxy" or "this is kubevisor-api".
"""

from __future__ import annotations

import ssl
from collections.abc import Collection
from pathlib import Path
from typing import Any


def server_context(
    *, cert: Path, key: Path, client_ca: Path | str, required: bool
) -> ssl.SSLContext:
    """Serve with `cert`; verify client certificates against `client_ca` (a file, or PEM
    text when a str).

    `required`: refuse the handshake without one (the agent); else a client may come
    without one and the handler decides (the aggregated API serves discovery to anyone).
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    if isinstance(client_ca, Path):
        context.load_verify_locations(cafile=str(client_ca))
    else:
        context.load_verify_locations(cadata=client_ca)
    context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
    return context


def client_context(*, ca: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """Verify the server against `ca`; present `cert` when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key is not None else None)
    return context


def common_name(peer: dict[str, Any] | None) -> str | None:
    """The CommonName of a verified peer certificate (`SSLObject.getpeercert()`), if any."""
    for rdn in (peer or {}).get("subject", ()):
        for attribute, value in rdn:
            if attribute == "commonName":
                return str(value)
    return None


def allowed(name: str | None, names: Collection[str]) -> bool:
    """A verified peer may in: any name when `names` is empty, else one of them."""
    return name is not None and (not names or name in names)
