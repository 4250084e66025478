"""The controller's Services wiring: an EndpointSlice per Service that selects VMs.

A Service opts in with the annotation `kubevisor.io/vm-selector` and no `spec.selector`
(core/network/endpoints.py has the convention and builds the slice). This object follows
the Services by watch (`on_service`, handlers/operator.py) and the VMs through the network
wiring (`on_vm`, called by `handlers.networks.Networks.on_vm` after each VM event), and
applies a Service's slice whenever what it would say changes: a VM selected or no longer,
its address recorded, its Ready condition flipping, the Service's ports changing.
"""

from __future__ import annotations

import logging

from kubevisor.api import conditions as cond
from kubevisor.api import objects
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.network import endpoints
from kubevisor.core.network.endpoints import Endpoint, SelectorError
from kubevisor.handlers.port import ControllerPort
from kubevisor.kube.client import Kube, Object

log = logging.getLogger("kubevisor.controller.services")


def endpoint(vm: VirtualMachine) -> Endpoint:
    """What a Service needs of `vm`."""
    status = vm.status
    ready = cond.find(status.conditions, cond.READY) if status else None
    addresses = [a for i in (status.interfaces if status else []) for a in i.ip_addresses[:1]]
    return Endpoint(
        name=str(vm.metadata["name"]),
        uid=str(vm.metadata.get("uid") or ""),
        labels=dict(vm.metadata.get("labels") or {}),
        address=addresses[0] if addresses else None,
        ready=ready is not None and ready.status == "True",
    )


class Services:
    """The Services that select VMs and the EndpointSlices written for them."""

    def __init__(self, port: ControllerPort, kube: Kube) -> None:
        self.port = port
        self.kube = kube
        self.services: dict[str, Object] = {}
        self.selectors: dict[str, dict[str, str]] = {}
        self.written: dict[str, Object] = {}
        """Each Service's slice as last applied, so an unchanged one is not applied again."""
        self.endpoints: dict[str, dict[str, Endpoint]] = {}
        """Per namespace, each VM's endpoint by name."""
        self.complaints: dict[str, str] = {}

    async def on_service(self, event: str | None, obj: Object) -> None:
        """A watch event of a Service."""
        meta = obj["metadata"]
        key = objects.key(meta)
        required = await self._selector(key, obj) if event != "DELETED" else None
        if required is None:
            self.services.pop(key, None)
            self.selectors.pop(key, None)
            annotated = endpoints.SELECTOR_ANNOTATION in (meta.get("annotations") or {})
            if event == "DELETED":
                self.complaints.pop(key, None)
            if self.written.pop(key, None) is not None or (event == "DELETED" and annotated):
                await self.kube.delete_endpoint_slice(
                    meta["namespace"], endpoints.slice_name(meta["name"])
                )
            return
        self.services[key] = obj
        self.selectors[key] = required
        await self._sync(key)

    async def _selector(self, key: str, obj: Object) -> dict[str, str] | None:
        """The VM selector of a Service that asks for one (None: it does not, or not in
        a way this can serve: then a Warning event on the Service says why, once)."""
        try:
            required = endpoints.requested(obj)
        except SelectorError as invalid:
            await self._complain(key, obj, str(invalid))
            return None
        self.complaints.pop(key, None)
        return required

    async def _complain(self, key: str, obj: Object, problem: str) -> None:
        if self.complaints.get(key) == problem:
            return
        self.complaints[key] = problem
        log.warning("service %s: %s", key, problem)
        await self.port.event(obj, "Warning", "InvalidVMSelector", problem)

    async def sweep(self) -> None:
        """Delete the EndpointSlices managed by kubevisor that no Service asks for any more:
        those of a Service deleted or un-annotated while no controller ran (the watch then
        never says so; without a garbage collector, as on the testbed's bare API server,
        even a deleted Service's slice stays). At start-up and at each resync. Slices are
        listed before Services, and each is deleted only as listed (its uid and
        resourceVersion as preconditions), so a slice written meanwhile stays."""
        slices = await self.kube.list_endpoint_slices(
            label_selector=f"{endpoints.MANAGED_BY}={endpoints.MANAGER}"
        )
        services = await self.kube.list_services()
        for orphan in endpoints.orphans(services, slices):
            meta = orphan["metadata"]
            deleted = await self.kube.delete_endpoint_slice(
                meta["namespace"],
                meta["name"],
                preconditions=(meta["uid"], meta["resourceVersion"]),
            )
            if deleted:
                log.info(
                    "deleted EndpointSlice %s/%s: no Service asks for it",
                    meta["namespace"],
                    meta["name"],
                )
                service = f"{meta['namespace']}/{meta['name'].removesuffix(endpoints.SUFFIX)}"
                self.written.pop(service, None)

    async def on_vm(self, key: str, vm: VirtualMachine | None) -> None:
        """VM `key` changed (None: it is gone): update the slices of the Services that
        selected it before or select it now."""
        namespace, name = key.split("/", 1)
        known = self.endpoints.setdefault(namespace, {})
        before = known.get(name)
        after = endpoint(vm) if vm is not None else None
        if before == after:
            return
        if after is None:
            known.pop(name, None)
        else:
            known[name] = after
        for service, required in list(self.selectors.items()):
            if service.split("/", 1)[0] != namespace:
                continue
            if any(
                e is not None and endpoints.matches(required, e.labels) for e in (before, after)
            ):
                await self._sync(service)

    async def _sync(self, key: str) -> None:
        service = self.services[key]
        namespace = service["metadata"]["namespace"]
        body = endpoints.endpoint_slice(
            service, self.selectors[key], self.endpoints.get(namespace, {}).values()
        )
        if self.written.get(key) == body:
            return
        await self.kube.apply_endpoint_slice(body)
        self.written[key] = body
