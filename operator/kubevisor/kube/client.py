"""kubevisor's Kubernetes calls, on the asyncio flavour of the official client.

Status is written with server-side apply, each process under its own field manager
(`kubevisor-agent`, `kubevisor-controller`), so each owns exactly the fields it writes
and never clobbers the other's, although both live in one `status`: the CRDs key
conditions by type, so ownership is per condition (DESIGN.md section 3, one writer per
field).
"""

from __future__ import annotations

import base64
import datetime
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from kubernetes.aio import client, config
from kubernetes.aio.client.exceptions import ApiException

from kubevisor import metrics
from kubevisor.api import schema, wire
from kubevisor.api.wire import API_VERSION, GROUP, VERSION
from kubevisor.kube import access, watching

VMS = wire.VIRTUAL_MACHINES
HOSTS = wire.HYPERVISOR_HOSTS
JOBS = wire.MIGRATION_JOBS
NETWORKS = wire.NETWORKS
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"

Object = dict[str, Any]
T = TypeVar("T")
P = ParamSpec("P")


def counted(verb: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Count a Kube method's requests in kubevisor_api_requests_total{verb, code}."""

    def wrap(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(method)
        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                result = await method(*args, **kwargs)
            except ApiException as error:
                metrics.API_REQUESTS.labels(verb, str(error.status)).inc()
                raise
            except Exception:
                metrics.API_REQUESTS.labels(verb, "error").inc()
                raise
            metrics.API_REQUESTS.labels(verb, "2xx").inc()
            return result

        return call

    return wrap


class Kube:
    """Typed wrappers over the calls the agent, the controller and the console API make.

    One instance per writer: `field_manager` names whose fields its applies own."""

    def __init__(self, api: client.ApiClient, *, field_manager: str = wire.AGENT) -> None:
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self._leases = client.CoordinationV1Api(api)
        self._core = client.CoreV1Api(api)
        self._authorization = client.AuthorizationV1Api(api)
        self._discovery = client.DiscoveryV1Api(api)
        self.field_manager = field_manager

    @property
    def custom(self) -> client.CustomObjectsApi:
        """The custom-objects API, for the kind-specific modules beside this one
        (`kube/snapshots.py`, `kube/snapshotschedules.py`)."""
        return self._custom

    @classmethod
    async def connect(cls, kubeconfig: Path | None, *, connections: int | None = None) -> Kube:
        """A client of the kubeconfig's cluster (None: in-cluster). `connections` raises the
        pool's limit of open connections (100): each watch holds one for its lifetime, so
        one client shared by many watchers (`agent.fleet`) needs more."""
        if kubeconfig is None:
            config.load_incluster_config()
            api = client.ApiClient()
        else:
            api = await config.new_client_from_config(config_file=str(kubeconfig))
        if connections is not None:
            api.rest_client.maxsize = connections  # read when the first request connects
        return cls(api)

    @property
    def server(self) -> str:
        """The API server's URL, as the kubeconfig or the service account names it."""
        return str(self._api.configuration.host)

    async def close(self) -> None:
        await self._api.close()

    # -- VirtualMachines ---------------------------------------------------------------

    @counted("LIST")
    async def list_hosts(self) -> list[Object]:
        reply = await self._custom.list_cluster_custom_object(GROUP, VERSION, HOSTS.plural)
        return list(cast(Object, reply)["items"])

    @counted("LIST")
    async def list_namespaces(self) -> list[Object]:
        """Every Namespace (the controller reads their host pools, `core.placement.pools`)."""
        reply = await self._core.list_namespace()
        return [self._api.sanitize_for_serialization(item) for item in reply.items]

    async def list_leases(self, namespace: str) -> list[Object]:
        return (await self.list_leases_at(namespace))[0]

    @counted("LIST")
    async def list_leases_at(self, namespace: str) -> tuple[list[Object], str]:
        """The Leases of one namespace and the listing's resourceVersion, to watch from."""
        reply = await self._leases.list_namespaced_lease(namespace)
        items = [self._api.sanitize_for_serialization(item) for item in reply.items]
        version = reply.metadata.resource_version if reply.metadata is not None else None
        return items, str(version or "")

    async def watch_leases(
        self, namespace: str, *, resource_version: str, timeout: int = 300
    ) -> AsyncIterator[tuple[str, Object]]:
        """(type, Lease as a dict) pairs of one namespace; raises Gone on HTTP 410."""
        async for kind, obj in watching.stream(
            self._leases.list_namespaced_lease,
            namespace,
            resource_version=resource_version,
            timeout=timeout,
        ):
            yield kind, self._api.sanitize_for_serialization(obj)

    @counted("LIST")
    async def list_vms(self, *, label_selector: str = "") -> tuple[list[Object], str]:
        return await self.list_objects(VMS.plural, label_selector)

    async def list_objects(self, plural: str, label_selector: str) -> tuple[list[Object], str]:
        """Every object of `plural` matching the selector, and the listing's resourceVersion."""
        reply = await self._custom.list_cluster_custom_object(
            GROUP, VERSION, plural, label_selector=label_selector
        )
        listing = cast(Object, reply)
        return list(listing["items"]), str(listing["metadata"]["resourceVersion"])

    async def watch_vms(
        self, *, label_selector: str, resource_version: str, timeout: int = 300
    ) -> AsyncIterator[tuple[str, Object]]:
        """(type, object) pairs until the server ends the watch; raises Gone on HTTP 410."""
        async for pair in self.watch_objects(VMS.plural, label_selector, resource_version, timeout):
            yield pair

    async def watch_objects(
        self, plural: str, label_selector: str, resource_version: str, timeout: int
    ) -> AsyncIterator[tuple[str, Object]]:
        async for pair in watching.stream(
            self._custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            plural,
            label_selector=label_selector,
            resource_version=resource_version,
            timeout=timeout,
        ):
            yield pair

    @counted("GET")
    async def get_vm(self, namespace: str, name: str) -> Object | None:
        return await self.get_object(namespace, VMS.plural, name)

    async def get_object(self, namespace: str, plural: str, name: str) -> Object | None:
        try:
            reply = await self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(Object, reply)

    @counted("PATCH")
    async def patch_vm(self, namespace: str, name: str, patch: Object) -> Object:
        """A JSON merge patch of the main resource (labels, finalizers; never status)."""
        return await self._merge(VMS.plural, namespace, name, patch)

    async def _merge(self, plural: str, namespace: str, name: str, patch: Object) -> Object:
        reply = await self._custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name, patch, _content_type=MERGE
        )
        return cast(Object, reply)

    async def patch_vm_status(self, namespace: str, name: str, patch: Object) -> Object | None:
        """A JSON merge patch of the status subresource: only to remove fields that a
        server-side apply leaving them out cannot, because another field manager (a hand
        edit with kubectl) holds them too. With `metadata.resourceVersion` in `patch` it
        applies only to that version: None when the object changed since (HTTP 409)."""
        try:
            return await self._merge_vm_status(namespace, name, patch)
        except ApiException as error:
            if error.status == 409:
                return None
            raise

    @counted("PATCH")
    async def _merge_vm_status(self, namespace: str, name: str, patch: Object) -> Object:
        reply = await self._custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, VMS.plural, name, patch, _content_type=MERGE
        )
        return cast(Object, reply)

    @counted("APPLY")
    async def apply_vm_status(self, namespace: str, name: str, status: Object) -> Object:
        return await self.apply_object_status(
            VMS.kind, VMS.plural, namespace, name, status, self.field_manager
        )

    async def apply_object_status(
        self, kind: str, plural: str, namespace: str, name: str, status: Object, manager: str
    ) -> Object:
        body = {
            "apiVersion": API_VERSION,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        }
        reply = await self._custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            body,
            field_manager=manager,
            force=True,
            _content_type=APPLY,
        )
        return cast(Object, reply)

    @counted("APPLY")
    async def apply_vm_interfaces(
        self, namespace: str, name: str, interfaces: list[Object]
    ) -> Object:
        """Apply a VM's status.interfaces under a field manager of their own
        (`<manager>-network`): the controller's other status applies leave them out, and
        under one manager each would drop them."""
        return await self.apply_object_status(
            "VirtualMachine",
            VMS.plural,
            namespace,
            name,
            {"interfaces": interfaces},
            f"{self.field_manager}-network",
        )

    # -- Networks (the controller's writes) ---------------------------------------------

    @counted("PATCH")
    async def patch_network(self, namespace: str, name: str, patch: Object) -> Object:
        """A JSON merge patch of a Network's metadata (the controller's finalizer)."""
        return await self._merge(NETWORKS.plural, namespace, name, patch)

    @counted("APPLY")
    async def apply_network_status(self, namespace: str, name: str, status: Object) -> Object:
        return await self.apply_object_status(
            "Network", NETWORKS.plural, namespace, name, status, self.field_manager
        )

    # -- EndpointSlices of Services that front VMs --------------------------------------

    @counted("APPLY")
    async def apply_endpoint_slice(self, body: Object) -> Object:
        """Create or update an EndpointSlice (server-side apply of the whole body)."""
        meta = body["metadata"]
        reply = await self._discovery.patch_namespaced_endpoint_slice(
            meta["name"],
            meta["namespace"],
            body,
            field_manager=self.field_manager,
            force=True,
            _content_type=APPLY,
        )
        return cast(Object, self._api.sanitize_for_serialization(reply))

    @counted("DELETE")
    async def delete_endpoint_slice(
        self, namespace: str, name: str, *, preconditions: tuple[str, str] | None = None
    ) -> bool:
        """Delete an EndpointSlice (with `preconditions`, only while its uid and
        resourceVersion are these); whether this call deleted it. One already gone, or
        changed since (a failed precondition), is fine."""
        body = None
        if preconditions is not None:
            uid, resource_version = preconditions
            body = client.V1DeleteOptions(
                preconditions=client.V1Preconditions(uid=uid, resource_version=resource_version)
            )
        try:
            await self._discovery.delete_namespaced_endpoint_slice(name, namespace, body=body)
        except ApiException as error:
            if error.status not in (404, 409):
                raise
            return False
        return True

    @counted("LIST")
    async def list_endpoint_slices(self, *, label_selector: str) -> list[Object]:
        """The EndpointSlices of every namespace with these labels."""
        reply = await self._discovery.list_endpoint_slice_for_all_namespaces(
            label_selector=label_selector
        )
        return list(cast(Object, self._api.sanitize_for_serialization(reply))["items"])

    @counted("LIST")
    async def list_services(self) -> list[Object]:
        """The Services of every namespace."""
        reply = await self._core.list_service_for_all_namespaces()
        return list(cast(Object, self._api.sanitize_for_serialization(reply))["items"])

    # -- ResourceQuotas (the controller's part of their status) -------------------------

    @counted("LIST")
    async def list_quotas(self) -> list[Object]:
        """Every ResourceQuota of the cluster (the controller enforces those naming
        kubevisor's resources)."""
        reply = await self._core.list_resource_quota_for_all_namespaces()
        return [self._api.sanitize_for_serialization(item) for item in reply.items]

    @counted("APPLY")
    async def apply_quota_status(
        self, namespace: str, name: str, *, hard: dict[str, str], used: dict[str, str]
    ) -> Object:
        """Apply `status.hard` and `status.used` of kubevisor's resources only: the quota
        controller's entries (pods, services...) are other keys, left as they are."""
        body = {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": name, "namespace": namespace},
            "status": {"hard": hard, "used": used},
        }
        reply = await self._core.patch_namespaced_resource_quota_status(
            name,
            namespace,
            body,
            field_manager=self.field_manager,
            force=True,
            _content_type=APPLY,
        )
        return cast(Object, self._api.sanitize_for_serialization(reply))

    # -- MigrationJobs -----------------------------------------------------------------

    @counted("LIST")
    async def list_jobs(self, *, label_selector: str = "") -> tuple[list[Object], str]:
        return await self.list_objects(JOBS.plural, label_selector)

    async def watch_jobs(
        self, *, label_selector: str, resource_version: str, timeout: int = 300
    ) -> AsyncIterator[tuple[str, Object]]:
        async for pair in self.watch_objects(
            JOBS.plural, label_selector, resource_version, timeout
        ):
            yield pair

    @counted("GET")
    async def get_job(self, namespace: str, name: str) -> Object | None:
        return await self.get_object(namespace, JOBS.plural, name)

    @counted("POST")
    async def create_job(self, namespace: str, body: Object) -> Object:
        reply = await self._custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, JOBS.plural, body, field_manager=self.field_manager
        )
        return cast(Object, reply)

    @counted("PATCH")
    async def patch_job(self, namespace: str, name: str, patch: Object) -> Object:
        """A JSON merge patch of a MigrationJob's metadata (labels, finalizers)."""
        return await self._merge(JOBS.plural, namespace, name, patch)

    @counted("APPLY")
    async def apply_job_status(
        self, namespace: str, name: str, status: Object, *, manager: str | None = None
    ) -> Object:
        """Apply this writer's part of a MigrationJob's status. The two agents of a migration
        write different parts, so each passes its own `manager` (one name for both would
        make each apply drop the other's fields)."""
        return await self.apply_object_status(
            JOBS.kind, JOBS.plural, namespace, name, status, manager or self.field_manager
        )

    @counted("APPLY")
    async def apply_vm_flavor(self, namespace: str, name: str, flavor: Object | None) -> Object:
        """Record the flavor a VM runs in its status.flavor (None: remove the record),
        under the controller's own field manager for it (`wire.FLAVOR_MANAGER`), so the
        controller's other status applies, which leave it out, keep it."""
        status = {} if flavor is None else {"flavor": flavor}
        return await self.apply_object_status(
            VMS.kind, VMS.plural, namespace, name, status, wire.FLAVOR_MANAGER
        )

    # -- flavors -----------------------------------------------------------------------

    @counted("LIST")
    async def list_flavors(self, resource: wire.Resource) -> list[Object]:
        """Every flavor of `resource` (wire.CLUSTER_FLAVORS or wire.FLAVORS, the latter
        in every namespace)."""
        return (await self.list_objects(resource.plural, ""))[0]

    # -- Networks ----------------------------------------------------------------------

    @counted("LIST")
    async def list_networks(self) -> tuple[list[Object], str]:
        """Every Network in every namespace, and the listing's resourceVersion."""
        return await self.list_objects(NETWORKS.plural, "")

    async def watch_networks(
        self, *, resource_version: str, timeout: int = 300
    ) -> AsyncIterator[tuple[str, Object]]:
        async for pair in self.watch_objects(NETWORKS.plural, "", resource_version, timeout):
            yield pair

    # -- HypervisorHosts ---------------------------------------------------------------

    @counted("LIST")
    async def list_hosts_at(self) -> tuple[list[Object], str]:
        """Every HypervisorHost and the listing's resourceVersion, to watch from (the
        agent: the other hosts' tunnel endpoints)."""
        return await self.list_objects(HOSTS.plural, "")

    async def watch_hosts(
        self, *, resource_version: str, timeout: int = 300
    ) -> AsyncIterator[tuple[str, Object]]:
        async for pair in self.watch_objects(HOSTS.plural, "", resource_version, timeout):
            yield pair

    @counted("GET")
    async def get_host(self, name: str) -> Object | None:
        try:
            reply = await self._custom.get_cluster_custom_object(GROUP, VERSION, HOSTS.plural, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(Object, reply)

    @counted("POST")
    async def create_host(
        self, name: str, labels: dict[str, str], spec: Object | None = None
    ) -> Object:
        body = {
            "apiVersion": API_VERSION,
            "kind": HOSTS.kind,
            "metadata": {"name": name, "labels": labels},
            "spec": spec or {},
        }
        reply = await self._custom.create_cluster_custom_object(
            GROUP, VERSION, HOSTS.plural, body, field_manager=self.field_manager
        )
        return cast(Object, reply)

    @counted("APPLY")
    async def apply_host_status(self, name: str, status: Object) -> Object:
        body = {
            "apiVersion": API_VERSION,
            "kind": HOSTS.kind,
            "metadata": {"name": name},
            "status": status,
        }
        reply = await self._custom.patch_cluster_custom_object_status(
            GROUP,
            VERSION,
            HOSTS.plural,
            name,
            body,
            field_manager=self.field_manager,
            force=True,
            _content_type=APPLY,
        )
        return cast(Object, reply)

    # -- heartbeat ---------------------------------------------------------------------

    @counted("PATCH")
    async def renew_lease(self, *, namespace: str, name: str, duration: int) -> None:
        """Create or renew the host's Lease: one small write per heartbeat."""
        now = datetime.datetime.now(datetime.UTC)
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": duration,
            "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        try:
            await self._leases.patch_namespaced_lease(
                name, namespace, {"spec": spec}, _content_type=MERGE
            )
        except ApiException as error:
            if error.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {**spec, "acquireTime": spec["renewTime"]},
            }
            await self._leases.create_namespaced_lease(
                namespace, client.V1Lease.model_validate(body)
            )

    # -- secrets -----------------------------------------------------------------------

    @counted("GET")
    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data, decoded as UTF-8 (None: no such Secret): the controller reads
        a host's BMC credentials when it fences the host, and keeps them no longer."""
        try:
            reply = await self._core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        data = reply.data or {}
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    # -- access (the console API) -----------------------------------------------------

    async def authentication_config(self) -> dict[str, str]:
        return await access.authentication_config(self._core)

    async def review(self, user: access.User, attributes: access.Attributes) -> tuple[bool, str]:
        return await access.review(self._authorization, user, attributes)

    # -- events ------------------------------------------------------------------------

    @counted("POST")
    async def event(
        self, *, involved: Object, type_: str, reason: str, message: str, component: str
    ) -> None:
        """Record a Kubernetes Event about `involved` (an object with kind/name/uid)."""
        meta = involved.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        now = schema.timestamp(datetime.datetime.now(datetime.UTC))
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", API_VERSION),
                "kind": involved.get("kind", VMS.kind),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": component},
            "reportingComponent": component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._core.create_namespaced_event(namespace, client.CoreV1Event.model_validate(body))
