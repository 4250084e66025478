"""Where an image download may connect: refused categories, the admin's allow-list, the
API server, and the redirects followed."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubevisor.core import destinations
from kubevisor.core.destinations import Policy

ip = ipaddress.ip_address
API = Policy(api_server=frozenset({(ip("10.0.0.1"), 6443)}))


def refusal(
    address: str, *, port: int = 80, host: str = "images.example", **policy: object
) -> str | None:
    return destinations.refusal(
        ip(address),
        port=port,
        host=host,
        policy=Policy(**policy),
        own=False,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("address", "says"),
    [
        pytest.param("169.254.169.254", "is link-local (cloud metadata)", id="cloud-metadata"),
        pytest.param(
            "fd00:ec2::254",
            "is a cloud provider's address (cloud metadata)",
            id="aws-ipv6-metadata",
        ),
        pytest.param("169.254.1.1", "is link-local;", id="link-local"),
        pytest.param("fe80::1", "is link-local;", id="ipv6-link-local"),
        pytest.param("127.0.0.1", "is loopback", id="loopback"),
        pytest.param("127.200.0.9", "is loopback", id="loopback-network"),
        pytest.param("::1", "is loopback", id="ipv6-loopback"),
        pytest.param("::ffff:127.0.0.1", "destination 127.0.0.1 is loopback", id="ipv4-mapped"),
        pytest.param("0.0.0.0", "is unspecified", id="unspecified"),
        pytest.param("0.1.2.3", "is unspecified", id="this-network"),
        pytest.param("::", "is unspecified", id="ipv6-unspecified"),
        pytest.param("224.0.0.1", "is multicast", id="multicast"),
        pytest.param("ff02::1", "is multicast", id="ipv6-multicast"),
        pytest.param("255.255.255.255", "is reserved (or broadcast)", id="broadcast"),
    ],
)
def test_addresses_inside_the_host_or_its_link_are_refused_with_what_they_are(
    address: str, says: str
) -> None:
    refused = refusal(address)
    assert refused is not None and says in refused
    assert refused.endswith("an admin may allow it with --image-source-allow")


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("93.184.215.14", id="public-ipv4"),
        pytest.param("10.1.2.3", id="private-ipv4"),
        pytest.param("2606:4700::1111", id="public-ipv6"),
    ],
)
def test_other_addresses_are_allowed(address: str) -> None:
    assert refusal(address) is None


def test_the_api_servers_address_is_refused_and_its_endpoint_even_when_allowed() -> None:
    allowed = {"allowed_networks": (ipaddress.ip_network("10.0.0.0/8"),)}
    on_other_port = destinations.refusal(
        ip("10.0.0.1"), port=10250, host="x", policy=API, own=False
    )
    assert on_other_port is not None and "is the API server's address" in on_other_port
    opened = Policy(api_server=API.api_server, **allowed)  # type: ignore[arg-type]
    assert (
        destinations.refusal(ip("10.0.0.1"), port=10250, host="x", policy=opened, own=False) is None
    )
    endpoint = destinations.refusal(ip("10.0.0.1"), port=6443, host="x", policy=opened, own=False)
    assert endpoint == "destination 10.0.0.1:6443 is the API server"


def test_this_hosts_own_addresses_are_refused() -> None:
    assert "is this host's own address" in (
        destinations.refusal(ip("10.9.9.9"), port=80, host="x", policy=Policy(), own=True) or ""
    )
    node = Policy(own_addresses=frozenset({ip("10.9.9.9")}))
    assert "is this host's own address" in (
        destinations.refusal(ip("10.9.9.9"), port=80, host="x", policy=node, own=False) or ""
    )


def test_an_allowed_host_name_allows_every_address_it_resolves_to() -> None:
    mirror = Policy(allowed_hosts=frozenset({"mirror.internal"}))
    for host in ("mirror.internal", "MIRROR.internal."):
        assert (
            destinations.refusal(ip("127.0.0.1"), port=80, host=host, policy=mirror, own=False)
            is None
        )
    assert destinations.refusal(ip("127.0.0.1"), port=80, host="other", policy=mirror, own=False)


@pytest.mark.parametrize(
    ("entries", "networks", "hosts"),
    [
        pytest.param(["127.0.0.0/8", "::1"], ["127.0.0.0/8", "::1/128"], set(), id="networks"),
        pytest.param(["10.1.2.3/8"], ["10.0.0.0/8"], set(), id="host-bits-dropped"),
        pytest.param(["Mirror.Internal.", " "], [], {"mirror.internal"}, id="host-name"),
    ],
)
def test_allow_lists_parse_networks_and_host_names(
    entries: list[str], networks: list[str], hosts: set[str]
) -> None:
    parsed_networks, parsed_hosts = destinations.allowed(entries)
    assert [str(n) for n in parsed_networks] == networks
    assert parsed_hosts == hosts


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "10.0.0", "not a host", "-bad.example", "a..b"])
def test_allow_list_entries_that_are_neither_are_refused_by_name(entry: str) -> None:
    with pytest.raises(ValueError, match="is neither a network"):
        destinations.allowed([entry])


@pytest.mark.parametrize(
    ("current", "target", "redirects", "refused"),
    [
        pytest.param("http://a/x", "http://b/y", 1, None, id="http-to-http"),
        pytest.param("http://a/x", "https://b/y", 5, None, id="upgrade-to-https-fifth"),
        pytest.param("https://a/x", "https://b/y", 6, "more than 5 redirects", id="sixth"),
        pytest.param("https://a/x", "http://b/y", 1, "redirect from https to http", id="downgrade"),
        pytest.param("http://a/x", "file:///etc/shadow", 1, "redirect to a file: URL", id="file"),
        pytest.param("http://a/x", "ftp://b/y", 1, "redirect to a ftp: URL", id="ftp"),
        pytest.param("http://a/x", "gopher://b/y", 1, "redirect to a gopher: URL", id="gopher"),
    ],
)
def test_redirects_are_followed_to_http_and_https_only_never_down_and_at_most_five(
    current: str, target: str, redirects: int, refused: str | None
) -> None:
    said = destinations.redirect_refusal(current=current, target=target, redirects=redirects)
    assert (said if refused is None else said and said[: len(refused)]) == refused


REFUSED_V4 = [
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4")
]


@given(st.ip_addresses(v=4))
def test_an_ipv4_address_is_refused_exactly_when_in_a_refused_network_in_any_spelling(
    address: ipaddress.IPv4Address,
) -> None:
    expected = (
        any(address in network for network in REFUSED_V4) or str(address) == "100.100.100.200"
    )
    policy = Policy()
    for spelling in (address, ipaddress.IPv6Address(f"::ffff:{address}")):
        refused = destinations.refusal(spelling, port=80, host="h", policy=policy, own=False)
        assert (refused is not None) == expected, spelling


@given(st.ip_addresses(v=4), st.integers(min_value=8, max_value=32))
def test_an_allowed_network_opens_every_address_in_it_but_the_api_servers_endpoint(
    address: ipaddress.IPv4Address, prefix: int
) -> None:
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    policy = Policy(allowed_networks=(network,), api_server=frozenset({(address, 443)}))
    assert destinations.refusal(address, port=80, host="h", policy=policy, own=True) is None
    assert destinations.refusal(address, port=443, host="h", policy=policy, own=True) is not None
