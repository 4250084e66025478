"""The host pools of namespaces, followed for placement (`core.placement.pools`).

kopf delivers every Namespace's watch events here (handlers/operator.py); the controller's
start-up and every resync load them whole (`load`), so no VM is placed before its
namespace's pool is known. What placement reads is `pool(namespace)`: the pool its
annotation `kubevisor.io/host-selector` gives, or None. A changed pool re-evaluates the
VMs waiting for a host (a wider pool may let one fit, a narrower one changes its message);
VMs already placed stay where they are, as they do when their own host selector changes.
"""

from __future__ import annotations

import logging

from kubevisor.core.placement import pools
from kubevisor.core.placement.model import NamespacePool
from kubevisor.handlers.port import ControllerPort
from kubevisor.kube.client import Object

log = logging.getLogger("kubevisor.controller")


class Namespaces:
    def __init__(self, port: ControllerPort) -> None:
        self.port = port
        self.pools: dict[str, NamespacePool] = {}
        """Namespace -> its host pool, for the namespaces that have one."""

    def pool(self, namespace: str) -> NamespacePool | None:
        """The host pool of `namespace` as last seen (None: any host)."""
        return self.pools.get(namespace)

    def load(self, namespaces: list[Object]) -> None:
        """Replace every pool with what a listing of Namespaces says (start-up and resync,
        which then reconcile every VM)."""
        self.pools.clear()
        for obj in namespaces:
            self._remember(obj)

    async def on_namespace(self, event: str | None, obj: Object) -> None:
        name = obj["metadata"]["name"]
        before = self.pools.get(name)
        if event == "DELETED":
            self.pools.pop(name, None)
        else:
            self._remember(obj)
        after = self.pools.get(name)
        if after == before:
            return
        log.info(
            "namespace %s: host pool %s",
            name,
            "none" if after is None else after.invalid or after.text,
        )
        await self.port.retry_pending()

    def _remember(self, obj: Object) -> None:
        meta = obj["metadata"]
        found = pools.pool_of(meta["name"], meta.get("annotations"))
        if found is None:
            self.pools.pop(meta["name"], None)
        else:
            self.pools[meta["name"]] = found
