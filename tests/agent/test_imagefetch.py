"""The image fetcher against real HTTP(S) servers on this host: destinations refused by
resolved address (metadata, loopback in any spelling, the API server, this host's own
address), redirects checked at every hop and capped, the connection pinned to the address
checked, and error text that says why without repeating what a server answered."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.conftest import LOOPBACK, ImageServer
from console.pki import Pki
from kubevisor.agent import imagefetch
from kubevisor.agent.imagecache import ImageCache
from kubevisor.agent.imagefetch import PermanentPullError
from kubevisor.core import destinations
from kubevisor.core.destinations import Policy

DEFAULT = Policy()
ALLOW = f"an admin may allow it with {destinations.ALLOW_FLAG}"


def fetch(url: str, policy: Policy, *, tls: ssl.SSLContext | None = None) -> bytes:
    with imagefetch.get(url, policy=policy, timeout=10, tls=tls) as response:
        return response.read()


def refused(url: str, policy: Policy, *, tls: ssl.SSLContext | None = None) -> PermanentPullError:
    with pytest.raises(PermanentPullError) as raised:
        fetch(url, policy, tls=tls)
    return raised.value


@pytest.fixture
def served(image_server: ImageServer) -> ImageServer:
    image_server.files["/image"] = b"image bytes"
    return image_server


def test_cloud_metadata_is_refused_before_any_connection() -> None:
    error = refused("http://169.254.169.254/latest/meta-data/iam/", DEFAULT)
    assert error.reason == "DestinationRefused"
    assert str(error) == (
        "download of http://169.254.169.254/latest/meta-data/iam/ refused: destination "
        f"169.254.169.254 is link-local (cloud metadata); {ALLOW}"
    )


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("127.0.0.1", id="address"),
        pytest.param("localhost", id="name-resolving-to-127.0.0.1"),
        pytest.param("2130706433", id="decimal"),
        pytest.param("0x7f.1", id="hex-and-short"),
        pytest.param("[::ffff:127.0.0.1]", id="ipv4-mapped-ipv6"),
    ],
)
def test_loopback_is_refused_by_resolved_address_however_the_url_spells_it(
    served: ImageServer, host: str
) -> None:
    error = refused(served.url("/image", host=host), DEFAULT)
    assert error.reason == "DestinationRefused"
    # localhost may resolve to ::1 first on other machines.
    assert re.search(f"destination (127.0.0.1|::1) is loopback; {ALLOW}$", str(error))
    assert served.requests == [], "refused before connecting"


def test_allow_listed_loopback_is_fetched_by_address_and_by_name(served: ImageServer) -> None:
    assert fetch(served.url("/image"), LOOPBACK) == b"image bytes"
    by_name = Policy(allowed_hosts=frozenset({"localhost"}))
    assert fetch(served.url("/image", host="localhost"), by_name) == b"image bytes"
    assert served.requests == ["/image", "/image"]


def test_the_api_servers_endpoint_is_refused_even_when_allow_listed(served: ImageServer) -> None:
    api = frozenset({(ipaddress.ip_address("127.0.0.1"), served.port)})
    policy = Policy(allowed_networks=LOOPBACK.allowed_networks, api_server=api)
    error = refused(served.url("/api/v1/secrets"), policy)
    assert str(error).endswith(f"refused: destination 127.0.0.1:{served.port} is the API server")
    assert served.requests == []


def test_the_api_servers_url_is_resolved_at_start_into_the_policy() -> None:
    policy = imagefetch.host_policy(
        allow=["mirror.internal", "10.0.0.0/8"],
        api_server="https://localhost:6443",
        own=["192.0.2.10"],
        max_bytes=1 << 30,
    )
    assert (ipaddress.ip_address("127.0.0.1"), 6443) in policy.api_server
    assert policy.allowed_hosts == {"mirror.internal"}
    assert policy.own_addresses == {ipaddress.ip_address("192.0.2.10")}
    assert policy.max_bytes == 1 << 30


def own_address() -> str:
    """This host's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        return str(probe.getsockname()[0])


def test_this_hosts_own_address_is_refused_as_the_kernel_knows_it() -> None:
    address = own_address()
    assert not ipaddress.ip_address(address).is_loopback
    with ImageServer(address=address) as server:
        server.files["/image"] = b"image bytes"
        error = refused(server.url("/image"), DEFAULT)
        assert f"destination {address} is this host's own address; {ALLOW}" in str(error)
        assert server.requests == []
        allowed = Policy(allowed_networks=(ipaddress.ip_network(address),))
        assert fetch(server.url("/image"), allowed) == b"image bytes"


def test_the_connection_goes_to_the_address_checked_never_resolving_the_name_again(
    served: ImageServer,
) -> None:
    """No gap for DNS rebinding: the name (here one that cannot resolve) only names the
    host to the server."""
    checked = [ipaddress.ip_address("127.0.0.1")]
    connection = imagefetch._PinnedHTTP(
        "rebind.invalid", served.port, addresses=checked, timeout=10
    )
    try:
        connection.request("GET", "/image")
        assert connection.getresponse().read() == b"image bytes"
    finally:
        connection.close()
    assert served.hosts == [f"rebind.invalid:{served.port}"]


def test_a_redirect_is_checked_like_the_first_url(served: ImageServer) -> None:
    served.redirects["/latest"] = "http://169.254.169.254/latest/meta-data/?token=x"
    error = refused(served.url("/latest"), LOOPBACK)
    assert error.reason == "DestinationRefused"
    assert str(error) == (
        f"download of {served.url('/latest')} (redirected to http://169.254.169.254) "
        f"refused: destination 169.254.169.254 is link-local (cloud metadata); {ALLOW}"
    )


@pytest.mark.parametrize(
    ("location", "says"),
    [
        pytest.param("file:///etc/shadow", "redirect to a file: URL", id="file"),
        pytest.param("ftp://127.0.0.1/image", "redirect to a ftp: URL", id="ftp"),
        pytest.param("gopher://127.0.0.1:6379/_INFO", "redirect to a gopher: URL", id="gopher"),
    ],
)
def test_a_redirect_to_another_scheme_is_refused(
    served: ImageServer, location: str, says: str
) -> None:
    served.redirects["/image"] = location
    error = refused(served.url("/image"), LOOPBACK)
    assert error.reason == "DownloadRefused"
    assert f"refused: {says}" in str(error)
    assert served.requests == ["/image"]


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    """(server, client) TLS contexts: a throwaway CA and a certificate for localhost."""
    pki = Pki(tmp_path / "pki", name="image-ca")
    cert, key = pki.issue("localhost", server=True)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    yield server, ssl.create_default_context(cafile=str(pki.ca))


def test_https_to_http_is_refused_https_is_fetched_from_the_checked_address(
    served: ImageServer, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, client = tls
    with ImageServer(tls=server_context) as secure:
        secure.files["/image"] = b"secure bytes"
        secure.redirects["/down"] = served.url("/image")
        url = secure.url("/image", host="localhost")
        assert fetch(url, LOOPBACK, tls=client) == b"secure bytes", "certificate of the name"
        error = refused(secure.url("/down", host="localhost"), LOOPBACK, tls=client)
        assert "refused: redirect from https to http" in str(error)
        assert secure.requests == ["/image", "/down"]
    assert served.requests == []


def test_at_most_five_redirects_are_followed(served: ImageServer) -> None:
    for hop in range(7):
        served.redirects[f"/r{hop}"] = f"/r{hop + 1}"
    served.files["/r5"] = served.files["/r6"] = b"image bytes"
    del served.redirects["/r5"]
    assert fetch(served.url("/r0"), LOOPBACK) == b"image bytes", "five redirects"
    served.requests.clear()
    served.redirects["/r5"] = "/r6"

    error = refused(served.url("/r0"), LOOPBACK)

    assert str(error).endswith("refused: more than 5 redirects")
    assert served.requests == [f"/r{hop}" for hop in range(6)]


def test_an_http_error_says_the_status_and_its_standard_phrase_only(
    served: ImageServer,
) -> None:
    served.errors["/image"] = 403
    served.phrases["/image"] = "Forbidden: token s3cr3t of service X"

    error = refused(served.url("/image"), LOOPBACK)

    assert str(error) == f"download of {served.url('/image')}: HTTP 403 Forbidden"
    assert error.reason == "DownloadRefused"


def test_a_refused_download_fails_the_pull_with_its_reason_and_leaves_no_file(
    tmp_path: Path, served: ImageServer
) -> None:
    digest = hashlib.sha256(b"image bytes").hexdigest()
    cache = ImageCache(tmp_path, policy=DEFAULT)

    with pytest.raises(PermanentPullError) as raised:
        asyncio.run(cache.fetch(served.url("/image"), digest))

    assert raised.value.reason == "DestinationRefused"
    assert served.requests == []
    assert list(tmp_path.rglob("*.partial")) == [] and not cache.path(digest).exists()
