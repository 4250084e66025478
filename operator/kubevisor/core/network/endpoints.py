"""Kubernetes Services in front of VMs: the EndpointSlice the controller keeps for a
Service that selects VMs, decided purely.

The convention (docs/networking.md, "Services"): a Service with no `spec.selector` and the
annotation `kubevisor.io/vm-selector` holding an equality-based label selector
("app=web,tier=front") gets one EndpointSlice, `<service>-kubevisor`, labelled
`kubernetes.io/service-name: <service>` (kube-proxy and the DNS read it) and
`endpointslice.kubernetes.io/managed-by: kubevisor.io` (Kubernetes' own EndpointSlice
controller leaves it alone). Its endpoints are the first address of the VMs of the
Service's namespace whose labels match, ready while the VM's Ready condition is True; its
ports are the Service's, with the target port when it is a number.

The controller's services wiring (handlers/services.py) applies what `endpoint_slice`
returns; no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SELECTOR_ANNOTATION = "kubevisor.io/vm-selector"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
MANAGER = "kubevisor.io"
SERVICE_NAME = "kubernetes.io/service-name"
SUFFIX = "-kubevisor"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a Service needs of one VM."""

    name: str
    uid: str
    labels: Mapping[str, str]
    address: str | None
    """The first address of its first interface on a Network, as its status records it
    (so valid: the model checked it); None: none yet."""
    ready: bool


class SelectorError(ValueError):
    """The annotation is not an equality-based selector; the message says where."""


def selector(text: str) -> dict[str, str]:
    """The labels `kubevisor.io/vm-selector` requires ("app=web,tier=front"; `==` is
    read as `=`). An empty selector would select every VM of the namespace: refused."""
    required: dict[str, str] = {}
    for term in (part.strip() for part in text.split(",")):
        key, sep, value = term.replace("==", "=").partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or "!" in key or "=" in value:
            raise SelectorError(
                f"{SELECTOR_ANNOTATION}: {term!r} is not key=value "
                "(only equality-based selectors are supported)"
            )
        required[key] = value
    if not required:
        raise SelectorError(f"{SELECTOR_ANNOTATION} is empty: it would select every VM")
    return required


def requested(service: Mapping[str, Any]) -> dict[str, str] | None:
    """The VM selector `service` asks for (None: it asks for none); SelectorError when it
    asks in a way this cannot serve: a malformed annotation, or one beside
    `spec.selector`."""
    text = (service["metadata"].get("annotations") or {}).get(SELECTOR_ANNOTATION)
    if text is None:
        return None
    if (service.get("spec") or {}).get("selector"):
        raise SelectorError(
            f"{SELECTOR_ANNOTATION} is ignored on a Service with spec.selector "
            "(Kubernetes keeps its endpoints from Pods); remove spec.selector"
        )
    return selector(text)


def orphans(
    services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The EndpointSlices kubevisor manages (of `slices`) that no Service of `services`
    asks for: their Service is gone, lost its annotation or asks in a way that cannot be
    served. Given the slices listed first and the Services after, a slice of a Service that
    asks for one is never among them."""
    asking = set()
    for service in services:
        try:
            wanted = requested(service) is not None
        except SelectorError:
            wanted = False
        if wanted:
            asking.add((service["metadata"]["namespace"], slice_name(service["metadata"]["name"])))
    return [
        found
        for found in slices
        if (found["metadata"].get("labels") or {}).get(MANAGED_BY) == MANAGER
        and (found["metadata"]["namespace"], found["metadata"]["name"]) not in asking
    ]


def matches(required: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in required.items())


def slice_name(service: str) -> str:
    return f"{service}{SUFFIX}"


def _ports(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    ports = []
    for port in (service.get("spec") or {}).get("ports") or []:
        target = port.get("targetPort")
        entry: dict[str, Any] = {
            "port": target if isinstance(target, int) else port["port"],
            "protocol": port.get("protocol") or "TCP",
        }
        if port.get("name"):
            entry["name"] = port["name"]
        ports.append(entry)
    return ports


def endpoint_slice(
    service: Mapping[str, Any], required: Mapping[str, str], vms: Iterable[Endpoint]
) -> dict[str, Any]:
    """The EndpointSlice of `service` (a Service as the API server holds it) over the VMs
    of its namespace that `required` selects, as the body to apply."""
    meta = service["metadata"]
    endpoints = [
        {
            "addresses": [vm.address],
            "conditions": {"ready": vm.ready},
            "targetRef": {
                "apiVersion": "kubevisor.io/v1alpha1",
                "kind": "VirtualMachine",
                "namespace": meta["namespace"],
                "name": vm.name,
                "uid": vm.uid,
            },
        }
        for vm in sorted(vms, key=lambda vm: vm.name)
        if vm.address is not None and matches(required, vm.labels)
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {SERVICE_NAME: meta["name"], MANAGED_BY: MANAGER},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": _ports(service),
    }
