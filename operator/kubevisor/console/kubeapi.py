"""The console API's Kubernetes reads and its SubjectAccessReview, on the asyncio client.

Its own ApiClient (the controller's Kube wraps another): the console API is a separate
server in the controller process, and needs only these three calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from kubernetes.aio import client, config
from kubernetes.aio.client.exceptions import ApiException

from kubevisor.api import wire
from kubevisor.console import protocol

Object = dict[str, Any]
# The asyncio client's config helpers and ApiClient carry no annotations.
kube_config: Any = config


@dataclass(frozen=True)
class User:
    """Who the front proxy says is calling (X-Remote-User / -Group / -Extra-*)."""

    name: str
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)


class ConsoleKube:
    def __init__(self, api: Any) -> None:
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self._authorization = client.AuthorizationV1Api(api)
        self._core = client.CoreV1Api(api)

    @classmethod
    async def connect(cls, kubeconfig: Path | None) -> ConsoleKube:
        if kubeconfig is None:
            kube_config.load_incluster_config()
            return cls(client.ApiClient())
        return cls(await kube_config.new_client_from_config(config_file=str(kubeconfig)))

    async def close(self) -> None:
        await self._api.close()

    async def _get(self, call: Any, *args: str) -> Object | None:
        try:
            return cast(Object, await call(wire.GROUP, wire.VERSION, *args))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def authentication_config(self) -> dict[str, str]:
        """kube-system/extension-apiserver-authentication: where kube-apiserver publishes
        its requestheader CA and header names for aggregated API servers."""
        config_map = await self._core.read_namespaced_config_map(
            "extension-apiserver-authentication", "kube-system"
        )
        return dict(config_map.data or {})

    async def get_vm(self, namespace: str, name: str) -> Object | None:
        return await self._get(
            self._custom.get_namespaced_custom_object, namespace, wire.VIRTUAL_MACHINES.plural, name
        )

    async def get_host(self, name: str) -> Object | None:
        return await self._get(
            self._custom.get_cluster_custom_object, wire.HYPERVISOR_HOSTS.plural, name
        )

    async def may_attach(self, user: User, *, namespace: str, name: str) -> tuple[bool, str]:
        """SubjectAccessReview: may `user` get virtualmachines/console of this VM?"""
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user.name,
                groups=list(user.groups),
                extra=user.extra or None,
                resource_attributes=client.V1ResourceAttributes(
                    namespace=namespace,
                    verb="get",
                    group=protocol.GROUP,
                    resource=protocol.RESOURCE,
                    subresource=protocol.SUBRESOURCE,
                    name=name,
                ),
            )
        )
        reply = await self._authorization.create_subject_access_review(review)
        status = reply.status
        if status is None:
            return False, "the SubjectAccessReview returned no status"
        return bool(status.allowed), str(status.reason or status.evaluation_error or "")
