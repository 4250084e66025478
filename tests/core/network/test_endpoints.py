"""The EndpointSlice of a Service that fronts VMs (core.network.endpoints)."""

from __future__ import annotations

import pytest

from kubevisor.core.network import endpoints
from kubevisor.core.network.endpoints import Endpoint, SelectorError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("app=web", {"app": "web"}, id="one-label"),
        pytest.param(
            " app == web , tier=front", {"app": "web", "tier": "front"}, id="spaces-and-=="
        ),
        pytest.param("kubevisor.io/role=db", {"kubevisor.io/role": "db"}, id="prefixed-key"),
        pytest.param("app=", {"app": ""}, id="empty-value"),
    ],
)
def test_an_equality_selector_is_read(text: str, expected: dict[str, str]) -> None:
    assert endpoints.selector(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty-selects-everything"),
        pytest.param("app", id="existence"),
        pytest.param("app!=web", id="inequality"),
        pytest.param("app in (web)", id="set-based"),
        pytest.param("app=web,", id="trailing-comma"),
    ],
)
def test_what_is_not_an_equality_selector_is_refused(text: str) -> None:
    with pytest.raises(SelectorError):
        endpoints.selector(text)


def test_the_slice_has_the_selected_vms_with_addresses_and_the_services_ports() -> None:
    service = {
        "metadata": {"name": "web", "namespace": "team", "uid": "u1"},
        "spec": {
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"port": 443, "targetPort": "https", "protocol": "TCP"},
            ]
        },
    }
    vms = [
        Endpoint(name="b", uid="ub", labels={"app": "web"}, address="10.0.0.12", ready=False),
        Endpoint(
            name="a", uid="ua", labels={"app": "web", "x": "y"}, address="10.0.0.10", ready=True
        ),
        Endpoint(name="db", uid="ud", labels={"app": "db"}, address="10.0.0.13", ready=True),
        Endpoint(name="new", uid="un", labels={"app": "web"}, address=None, ready=False),
    ]
    body = endpoints.endpoint_slice(service, {"app": "web"}, vms)
    assert [
        (e["targetRef"]["name"], e["addresses"], e["conditions"]) for e in body["endpoints"]
    ] == [
        ("a", ["10.0.0.10"], {"ready": True}),
        ("b", ["10.0.0.12"], {"ready": False}),
    ]
    assert body["ports"] == [
        {"name": "http", "port": 8080, "protocol": "TCP"},
        {"port": 443, "protocol": "TCP"},
    ]
    assert body["metadata"]["name"] == "web-kubevisor"
    assert body["metadata"]["ownerReferences"][0]["uid"] == "u1"
