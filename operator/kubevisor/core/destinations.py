"""Where an image download may connect, and which redirects it may follow.

A VM's author names the URL of its disk's image; the agent fetches it from inside the
cluster's network, where cloud metadata, the API server and the host's own services are
reachable. So by default a download refuses every address a URL's host resolves to that
is loopback, link-local (cloud metadata), unspecified, multicast or reserved, the API
server's, or this host's own. An admin opens more per host with the agent flag
`--image-source-allow` (networks and host names, for internal mirrors); the API server's
own endpoint stays refused even then. The agent's fetcher checks every resolved address
of every hop with `refusal`, connects only to an address it checked, and follows a
redirect only if `redirect_refusal` allows it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_FLAG = "--image-source-allow"
MAX_REDIRECTS = 5
SCHEMES = ("http", "https")

CLOUD_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean ...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6 (not link-local)
        "100.100.100.200",  # Alibaba Cloud (carrier-grade NAT space)
    )
)
UNSPECIFIED = (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128"))
"""Linux connects to 0.0.0.0 (and, on some kernels, the rest of 0/8) as to this host."""

_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The host's rules for image downloads, made once at the agent's start."""

    allowed_networks: tuple[Network, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()
    """Lower-case host names of URLs whose every address is allowed (an admin's mirror)."""
    api_server: frozenset[tuple[Address, int]] = frozenset()
    """The API server's endpoints (address, port): refused even when allowed."""
    own_addresses: frozenset[Address] = frozenset()
    """This host's addresses the agent cannot see as its own (e.g. the node's IP from a
    pod network); the fetcher asks the kernel about the rest."""
    max_bytes: int = 50 << 30
    """The largest image accepted, as served and as unpacked."""


def allowed(entries: Iterable[str]) -> tuple[tuple[Network, ...], frozenset[str]]:
    """The networks (CIDRs or single addresses) and host names of an allow-list; raises
    ValueError naming the first entry that is neither."""
    networks: list[Network] = []
    hosts: set[str] = set()
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        name = entry.lower().rstrip(".")
        if not _HOST_NAME.match(name) or name.replace(".", "").isdigit():
            raise ValueError(f"{entry!r} is neither a network (10.0.0.0/8, ::1) nor a host name")
        hosts.add(name)
    return tuple(networks), frozenset(hosts)


def refusal(address: Address, *, port: int, host: str, policy: Policy, own: bool) -> str | None:
    """Why a download may not connect to `address` (one that `host` resolved to), as the
    end of a sentence for the VM's author; None when it may. `own`: the kernel says the
    address is this host's."""
    address = _unmapped(address)
    if (address, port) in policy.api_server:
        return f"destination {_endpoint(address, port)} is the API server"
    if host.lower().rstrip(".") in policy.allowed_hosts or any(
        address in network for network in policy.allowed_networks
    ):
        return None
    what = _category(address, policy=policy, own=own)
    if what is None:
        return None
    return f"destination {address} {what}; an admin may allow it with {ALLOW_FLAG}"


def redirect_refusal(*, current: str, target: str, redirects: int) -> str | None:
    """Why the download may not follow its `redirects`-th redirect from `current` to
    `target` (an absolute URL), or None. Only http to https changes the scheme."""
    if redirects > MAX_REDIRECTS:
        return f"more than {MAX_REDIRECTS} redirects"
    scheme = urlsplit(target).scheme.lower()
    if scheme not in SCHEMES:
        return f"redirect to a {scheme}: URL (only http and https are fetched)"
    if urlsplit(current).scheme.lower() == "https" and scheme == "http":
        return "redirect from https to http"
    return None


def _category(address: Address, *, policy: Policy, own: bool) -> str | None:
    if address in CLOUD_METADATA:
        kind = "link-local" if address.is_link_local else "a cloud provider's address"
        return f"is {kind} (cloud metadata)"
    if address.is_loopback:
        return "is loopback"
    if address.is_link_local:
        return "is link-local"
    if any(address in network for network in UNSPECIFIED):
        return "is unspecified"
    if address.is_multicast:
        return "is multicast"
    if address.is_reserved:
        return "is reserved (or broadcast)"
    if any(address == server for server, _ in policy.api_server):
        return "is the API server's address"
    if own or address in policy.own_addresses:
        return "is this host's own address"
    return None


def _unmapped(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (::ffff:127.0.0.1) as the IPv4 address it reaches."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _endpoint(address: Address, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
