"""The EndpointSlice of a Service that fronts VMs (core.network.endpoints)."""

from __future__ import annotations

from typing import Any

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


def _service(
    name: str, namespace: str = "team", *, asks: bool = True, spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    annotations = {endpoints.SELECTOR_ANNOTATION: "app=web"} if asks else {}
    return {
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": spec or {},
    }


def _slice(service: str, namespace: str = "team", manager: str = "kubevisor.io") -> dict[str, Any]:
    labels = {endpoints.SERVICE_NAME: service, endpoints.MANAGED_BY: manager}
    return {"metadata": {"name": f"{service}-kubevisor", "namespace": namespace, "labels": labels}}


@pytest.mark.parametrize(
    ("services", "slices", "orphaned"),
    [
        pytest.param([_service("web")], [_slice("web")], [], id="asked-for"),
        pytest.param([], [_slice("web")], ["team/web-kubevisor"], id="service-gone"),
        pytest.param(
            [_service("web", asks=False)], [_slice("web")], ["team/web-kubevisor"], id="unannotated"
        ),
        pytest.param(
            [_service("web", spec={"selector": {"app": "web"}})],
            [_slice("web")],
            ["team/web-kubevisor"],
            id="asks-beside-spec-selector",
        ),
        pytest.param(
            [_service("web", namespace="other")],
            [_slice("web")],
            ["team/web-kubevisor"],
            id="same-name-other-namespace",
        ),
        pytest.param([], [_slice("web", manager="someone-else")], [], id="not-ours"),
    ],
)
def test_the_orphans_are_the_slices_no_service_asks_for(
    services: list[dict[str, Any]], slices: list[dict[str, Any]], orphaned: list[str]
) -> None:
    found = endpoints.orphans(services, slices)
    assert [f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in found] == orphaned
