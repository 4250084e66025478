"""The console API's requestheader authentication, without a server: who the front
proxy's headers name, and when they are believed."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from kubevisor.console import apiserver, tls
from kubevisor.kube.access import User

SETTINGS = apiserver.RequestHeader()


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        pytest.param(
            "front-proxy-client",
            [("X-Remote-User", "alice"), ("X-Remote-Group", "dev"), ("X-Remote-Group", "ops")],
            User("alice", ("dev", "ops")),
            id="user-and-groups",
        ),
        pytest.param(
            "front-proxy-client",
            [("X-Remote-User", "alice"), ("X-Remote-Extra-Scopes%2Fread", "a")],
            User("alice", (), {"scopes/read": ["a"]}),
            id="extra-keys-are-unescaped-and-lowercased",
        ),
        pytest.param(
            "someone-else", [("X-Remote-User", "alice")], None, id="other-certificate-names"
        ),
        pytest.param(None, [("X-Remote-User", "alice")], None, id="no-client-certificate"),
        pytest.param("front-proxy-client", [("X-Remote-Group", "dev")], None, id="no-user"),
    ],
)
def test_authenticate(
    peer: str | None, headers: list[tuple[str, str]], expected: User | None
) -> None:
    request = make_mocked_request("GET", "/", headers=CIMultiDict(headers))
    assert apiserver.authenticate(request, SETTINGS, peer) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("front-proxy-client", {"front-proxy-client"}, id="one"),
        pytest.param(" a, b ,", {"a", "b"}, id="spaces-and-empty-items"),
        pytest.param("", set(), id="empty-means-any"),
    ],
)
def test_allowed_names(text: str, expected: set[str]) -> None:
    assert apiserver.allowed_names(text) == expected


@pytest.mark.parametrize(
    ("name", "names", "expected"),
    [
        pytest.param("kubevisor-api", {"kubevisor-api"}, True, id="listed"),
        pytest.param("alice", {"kubevisor-api"}, False, id="not-listed"),
        pytest.param("alice", set(), True, id="any-verified-name"),
        pytest.param(None, set(), False, id="no-certificate-never"),
    ],
)
def test_tls_allowed(name: str | None, names: set[str], expected: bool) -> None:
    assert tls.allowed(name, names) is expected


def test_common_name_of_a_peer_certificate() -> None:
    peer = {"subject": ((("organizationName", "staff"),), (("commonName", "kubevisor-api"),))}
    assert tls.common_name(peer) == "kubevisor-api"
    assert tls.common_name(None) is None


def test_requestheader_from_the_apiservers_config_map() -> None:
    ca, settings = apiserver.requestheader_from(
        {
            "requestheader-client-ca-file": "PEM",
            "requestheader-allowed-names": '["front-proxy-client"]',
            "requestheader-username-headers": '["X-Remote-User"]',
            "requestheader-group-headers": '["X-Remote-Group"]',
            "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
        }
    )
    assert ca == "PEM"
    assert settings == apiserver.RequestHeader()


def test_requestheader_from_a_config_map_without_names_admits_any_name() -> None:
    _, settings = apiserver.requestheader_from({"requestheader-client-ca-file": "PEM"})
    assert settings.allowed_names == frozenset()


def test_requestheader_needs_the_ca() -> None:
    with pytest.raises(ValueError, match="requestheader-client-ca-file"):
        apiserver.requestheader_from({"client-ca-file": "PEM"})
