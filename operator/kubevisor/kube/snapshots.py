"""The VirtualMachineSnapshot calls of the agent (list, watch, status, get), on a `Kube`
connection: kept beside it so snapshots stay one module."""

from __future__ import annotations

from collections.abc import AsyncIterator

from kubevisor.api import wire
from kubevisor.kube.client import Kube, Object, counted

SNAPSHOTS = wire.SNAPSHOTS


class SnapshotApi:
    """VirtualMachineSnapshots through `kube` (its field manager owns the status it applies)."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    @counted("LIST")
    async def list(self) -> tuple[list[Object], str]:
        return await self._kube.list_objects(SNAPSHOTS.plural, "")

    async def watch(self, *, resource_version: str) -> AsyncIterator[tuple[str, Object]]:
        async for pair in self._kube.watch_objects(SNAPSHOTS.plural, "", resource_version, 300):
            yield pair

    @counted("GET")
    async def get(self, namespace: str, name: str) -> Object | None:
        return await self._kube.get_object(namespace, SNAPSHOTS.plural, name)

    @counted("APPLY")
    async def apply_status(self, namespace: str, name: str, status: Object) -> Object:
        return await self._kube.apply_object_status(
            SNAPSHOTS.kind, SNAPSHOTS.plural, namespace, name, status, self._kube.field_manager
        )
