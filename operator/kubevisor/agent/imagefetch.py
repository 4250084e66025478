"""The HTTP(S) GET of an image URL for the image cache, to vetted destinations only.

Every hop's host is resolved here, each of its addresses is checked against the host's
`destinations.Policy` (and the kernel asked whether it is one of this host's own), and
the connection goes to one of the addresses checked, never to a second resolution of the
name, so a DNS answer that changes between check and connect reaches nothing unchecked.
Redirects are followed by hand, at most `destinations.MAX_REDIRECTS`, each checked again;
no proxy from the environment is used. Errors say what was refused and why, with the
status code and its standard phrase at most: never a body, a header or a reason phrase of
the server's own, which could be an internal service's answer.

Runs in the image cache's worker thread (blocking sockets).
"""

from __future__ import annotations

import contextlib
import http
import http.client
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

from kubevisor.core import destinations
from kubevisor.drivers.base import PermanentError, RetryableError

# Statuses a later attempt can get past; every other 4xx means the request is wrong.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 425, 429})
NOT_FOUND_STATUSES = frozenset({404, 410})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "kubevisor-agent"


class RetryablePullError(RetryableError):
    """A download a later attempt may complete; `reason` is DownloadFailed (network
    errors, HTTP 5xx/408/425/429, a truncated body, the cache not writable) or DiskFull."""

    def __init__(self, message: str, *, reason: str = "DownloadFailed") -> None:
        # The agent's work queue backs off from 1 s, doubling: no floor of our own.
        super().__init__(message, delay=1.0)
        self.reason = reason


class PermanentPullError(PermanentError):
    """A download no retry can fix until the spec, the server or the host's rules change;
    `reason` is ChecksumMismatch, ImageNotFound (HTTP 404/410), DownloadRefused (other
    4xx, or a redirect the fetcher does not follow), DestinationRefused (an address the
    host's policy refuses), ImageTooLarge or CorruptImage (the served file is not the
    declared gzip/xz stream)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


ImagePullError = RetryablePullError | PermanentPullError


@contextlib.contextmanager
def get(
    url: str,
    *,
    policy: destinations.Policy,
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> Iterator[http.client.HTTPResponse]:
    """The 200 response to a GET of `url`, after the redirects allowed; the connection is
    closed on leaving. Raises PermanentPullError or RetryablePullError."""
    if urlsplit(url).scheme.lower() not in destinations.SCHEMES:
        raise PermanentPullError(
            f"download of {url} refused: only http and https are fetched",
            reason="DownloadRefused",
        )
    current, redirects = url, 0
    while True:
        where = _where(url, current)
        connection = _connect(current, where=where, policy=policy, timeout=timeout, tls=tls)
        try:
            response = _request(connection, current, where=where)
            if response.status == 200:
                yield response
                return
            location = response.getheader("Location")
            if response.status not in REDIRECT_STATUSES or not location:
                raise _status_error(where, response.status)
        finally:
            connection.close()
        redirects += 1
        target = urljoin(current, location.strip())
        refused = destinations.redirect_refusal(current=current, target=target, redirects=redirects)
        if refused is not None:
            raise PermanentPullError(f"{where} refused: {refused}", reason="DownloadRefused")
        current = target


def host_policy(
    *, allow: list[str], api_server: str, own: list[str], max_bytes: int
) -> destinations.Policy:
    """This host's policy, made at the agent's start: `allow` is the admin's allow-list,
    `api_server` the API server's URL (its name resolved now), `own` addresses of this
    host the agent's network namespace may not have (the node's IP seen from a pod)."""
    networks, hosts = destinations.allowed(allow)
    parts = urlsplit(api_server)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise RuntimeError(f"cannot resolve the API server {api_server}: {error}") from error
    servers = {(ipaddress.ip_address(str(info[4][0]).partition("%")[0]), port) for info in infos}
    return destinations.Policy(
        allowed_networks=networks,
        allowed_hosts=hosts,
        api_server=frozenset(servers),
        own_addresses=frozenset(ipaddress.ip_address(a) for a in own),
        max_bytes=max_bytes,
    )


def _where(url: str, current: str) -> str:
    """`download of URL`, and where a redirect led (scheme and host, no path or query)."""
    if current == url:
        return f"download of {url}"
    parts = urlsplit(current)
    return f"download of {url} (redirected to {parts.scheme}://{parts.netloc.rpartition('@')[2]})"


def _connect(
    url: str,
    *,
    where: str,
    policy: destinations.Policy,
    timeout: float,
    tls: ssl.SSLContext | None,
) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise PermanentPullError(f"{where}: the URL names no host", reason="DownloadRefused")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise PermanentPullError(f"{where}: {error}", reason="DownloadRefused") from error
    addresses = _resolve(host, port, where=where)
    for address in addresses:
        refused = destinations.refusal(
            address, port=port, host=host, policy=policy, own=_is_own(address)
        )
        if refused is not None:
            raise PermanentPullError(f"{where} refused: {refused}", reason="DestinationRefused")
    if parts.scheme == "https":
        context = tls or ssl.create_default_context()
        return _PinnedHTTPS(host, port, addresses=addresses, timeout=timeout, context=context)
    return _PinnedHTTP(host, port, addresses=addresses, timeout=timeout)


def _resolve(host: str, port: int, *, where: str) -> list[destinations.Address]:
    """Every address `host` resolves to, in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise RetryablePullError(f"{where} failed: cannot resolve {host}: {error}") from error
    addresses: list[destinations.Address] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # A scope (%eth0) marks a link-local IPv6 address: refused either way.
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def _is_own(address: destinations.Address) -> bool:
    """Whether this host (its network namespace) has `address`: only then may a socket
    bind to it."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


def _request(
    connection: http.client.HTTPConnection, url: str, *, where: str
) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    try:
        connection.request("GET", path, headers={"User-Agent": USER_AGENT})
        return connection.getresponse()
    except ssl.SSLCertVerificationError as error:
        raise PermanentPullError(
            f"{where}: TLS certificate not trusted: {error.verify_message}",
            reason="DownloadRefused",
        ) from error
    except (http.client.HTTPException, OSError) as error:
        raise RetryablePullError(f"{where} failed: {error}") from error


def _status_error(where: str, status: int) -> PermanentPullError | RetryablePullError:
    try:
        phrase = f" {http.HTTPStatus(status).phrase}"
    except ValueError:
        phrase = ""
    failed = f"{where}: HTTP {status}{phrase}"
    if status >= 500 or status in RETRYABLE_CLIENT_STATUSES:
        return RetryablePullError(failed)
    if status in NOT_FOUND_STATUSES:
        return PermanentPullError(failed, reason="ImageNotFound")
    if status in REDIRECT_STATUSES:
        return PermanentPullError(f"{failed} without a Location", reason="DownloadRefused")
    return PermanentPullError(failed, reason="DownloadRefused")


def _open_socket(addresses: list[destinations.Address], port: int, timeout: float) -> socket.socket:
    """A connection to the first of `addresses` (all checked) that answers."""
    last: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((str(address), port), timeout=timeout)
        except OSError as error:
            last = error
    assert last is not None  # getaddrinfo returns at least one address or raises
    raise last


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to checked addresses, whatever its host name resolves to now."""

    def __init__(
        self, host: str, port: int, *, addresses: list[destinations.Address], timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self.addresses = addresses

    def connect(self) -> None:
        self.sock = _open_socket(self.addresses, self.port, self.timeout)  # type: ignore[arg-type]


class _PinnedHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection to checked addresses; the certificate is checked for the URL's
    host name, as it would be without the pinning."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        addresses: list[destinations.Address],
        timeout: float,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.addresses = addresses
        self.tls = context

    def connect(self) -> None:
        sock = _open_socket(self.addresses, self.port, self.timeout)  # type: ignore[arg-type]
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)
