"""Services in front of VMs (handlers/services.py) on a fake API server: the EndpointSlice
follows the VMs the Service's `kubevisor.io/vm-selector` selects."""

from __future__ import annotations

import asyncio
from typing import Any

from kubevisor.handlers import listing

from .fake_cluster import NAMESPACE, Cluster, vm
from .test_networks import host, network, on


def service(
    name: str = "web", *, selector: str | None = "app=web", spec_selector: bool = False
) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    if spec_selector:
        spec["selector"] = {"app": "web"}
    annotations = {"kubevisor.io/vm-selector": selector} if selector is not None else {}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-svc-{name}",
            "annotations": annotations,
        },
        "spec": spec,
    }


def labelled(name: str, app: str) -> dict[str, Any]:
    obj = vm(name, networks=[on()])
    obj["metadata"]["labels"] = {"app": app}
    return obj


def addresses(cluster: Cluster, name: str = "web") -> dict[str, str]:
    found = cluster.kube.slices.get(f"{NAMESPACE}/{name}-kubevisor")
    assert found is not None, "no EndpointSlice"
    return {e["targetRef"]["name"]: e["addresses"][0] for e in found["endpoints"]}


async def started(cluster: Cluster) -> None:
    await cluster.start(
        hosts=[host("h1")],
        vms=[labelled("a", "web"), labelled("b", "web"), labelled("db", "db")],
        networks=[network()],
    )
    for name in ("a", "b", "db"):
        await cluster.vm_event(name)


def test_the_slice_lists_the_selected_vms_and_follows_their_labels(cluster: Cluster) -> None:
    services = cluster.controller.networks.services

    async def main() -> None:
        await started(cluster)
        await services.on_service("ADDED", service())
        assert addresses(cluster) == {"a": "10.0.0.10", "b": "10.0.0.12"}
        body = cluster.kube.slices[f"{NAMESPACE}/web-kubevisor"]
        assert body["metadata"]["labels"] == {
            "kubernetes.io/service-name": "web",
            "endpointslice.kubernetes.io/managed-by": "kubevisor.io",
        }
        assert body["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
        # db joins the service's app, b leaves it.
        for name, app in (("db", "web"), ("b", "other")):
            cluster.kube.vms[f"{NAMESPACE}/{name}"].obj["metadata"]["labels"] = {"app": app}
            await cluster.vm_event(name)
        assert addresses(cluster) == {"a": "10.0.0.10", "db": "10.0.0.13"}
        # A VM event that changes nothing the slice says writes nothing.
        writes = cluster.kube.called("apply_endpoint_slice")
        await cluster.vm_event("a")
        assert cluster.kube.called("apply_endpoint_slice") == writes

    asyncio.run(main())


def test_the_slice_goes_with_the_annotation_and_with_the_service(cluster: Cluster) -> None:
    services = cluster.controller.networks.services

    async def main() -> None:
        await started(cluster)
        await services.on_service("ADDED", service())
        await services.on_service("MODIFIED", service(selector=None))
        assert cluster.kube.slices == {}
        await services.on_service("MODIFIED", service())
        assert addresses(cluster) == {"a": "10.0.0.10", "b": "10.0.0.12"}
        await services.on_service("DELETED", service())
        assert cluster.kube.slices == {}

    asyncio.run(main())


def test_a_service_that_asks_wrongly_gets_a_warning_once_and_no_slice(cluster: Cluster) -> None:
    services = cluster.controller.networks.services

    async def main() -> None:
        await started(cluster)
        for _ in range(2):
            await services.on_service("MODIFIED", service(selector="app in (web)"))
        await services.on_service("MODIFIED", service(spec_selector=True))

    asyncio.run(main())
    assert cluster.kube.slices == {}
    assert cluster.kube.said("web", "InvalidVMSelector") == [
        (
            "Warning",
            "kubevisor.io/vm-selector: 'app in (web)' is not key=value "
            "(only equality-based selectors are supported)",
        ),
        (
            "Warning",
            "kubevisor.io/vm-selector is ignored on a Service with spec.selector (Kubernetes "
            "keeps its endpoints from Pods); remove spec.selector",
        ),
    ]


def test_the_resync_deletes_the_slices_no_service_asks_for_any_more(cluster: Cluster) -> None:
    """Un-annotated, deleted or asking wrongly while the controller did not see it (it was
    down): the watch never says so, the sweep does."""
    services = cluster.controller.networks.services

    async def main() -> None:
        await started(cluster)
        for name in ("web", "gone", "wrong", "kept"):
            await services.on_service("ADDED", service(name))
        cluster.kube.services = {
            f"{NAMESPACE}/web": service("web", selector=None),
            f"{NAMESPACE}/wrong": service("wrong", spec_selector=True),
            f"{NAMESPACE}/kept": service("kept"),
        }
        await listing.resync(cluster.controller)
        assert sorted(cluster.kube.slices) == [f"{NAMESPACE}/kept-kubevisor"]

    asyncio.run(main())
