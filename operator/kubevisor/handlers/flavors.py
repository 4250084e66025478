"""The controller's flavors: a cache of the flavor objects and each VM's flavor record.

Before the controller reads a VM that names a flavor, `resolve` brings the VM's
status.flavor to what `core.flavors.resolve` decides (recorded under its own field
manager), or writes the refusal into the VM's status. A flavor's watch event reconciles
the VMs naming it: one created late lets a VM refused with FlavorNotFound run, and an
edit reaches every VM not running.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kubevisor.api import objects
from kubevisor.api.wire import CLUSTER_FLAVORS, FLAVORS
from kubevisor.core import flavors
from kubevisor.core.flavors import FlavorKey, Refusal
from kubevisor.handlers.port import ControllerPort
from kubevisor.kube.client import Kube, Object

log = logging.getLogger("kubevisor.controller")


class Flavors:
    def __init__(self, controller: ControllerPort, kube: Kube) -> None:
        self.c = controller
        self.kube = kube
        self.objects: dict[FlavorKey, Object] = {}
        self.refused: dict[str, str] = {}
        """The last refusal posted as an Event per VM, so an unchanged one is not again."""

    def load(self, *, cluster: Iterable[Object], namespaced: Iterable[Object]) -> None:
        """The flavors as listed (at start-up and each resync), before VMs are reconciled
        from them: the listing replaces what the cache held."""
        self.objects.clear()
        for kind, listed in ((CLUSTER_FLAVORS.kind, cluster), (FLAVORS.kind, namespaced)):
            for obj in listed:
                self.objects[flavors.object_key(kind, obj)] = obj

    async def on_flavor(self, kind: str, event: str | None, obj: Object) -> None:
        """A flavor's watch event: remember it, then reconcile the VMs naming it."""
        found = flavors.object_key(kind, obj)
        if event == "DELETED":
            self.objects.pop(found, None)
        elif not objects.stale(obj, self.objects.get(found)):
            self.objects[found] = obj
        for key, _ in self.c.vms_naming(found):
            await self.c.reconcile_vm(key)

    def forget(self, key: str) -> None:
        self.refused.pop(key, None)

    async def resolve(self, key: str, obj: Object) -> Object | Refusal:
        """The VM `obj` with the flavor record it should have (written if it changed),
        or why it cannot run its flavor: the controller fails an unbound VM with it (a
        bound one keeps running the flavor it recorded, which a refusal never touches);
        either way an Event says so, once."""
        wanted = flavors.resolve(obj, self._named(obj))
        if isinstance(wanted, Refusal):
            if self.refused.get(key) != wanted.message:
                self.refused[key] = wanted.message
                await self.c.event(obj, "Warning", wanted.reason, wanted.message)
            return wanted
        self.refused.pop(key, None)
        current = (obj.get("status") or {}).get("flavor")
        if flavors.same(current, wanted):
            return obj
        meta = obj["metadata"]
        if wanted is not None:
            log.info("%s: runs flavor %s revision %s", key, wanted["name"], wanted["revision"])
        reply = await self.kube.apply_vm_flavor(meta["namespace"], meta["name"], wanted)
        self.c.remember_vm(reply)
        return reply

    def _named(self, obj: Object) -> Object | None:
        found = flavors.key(obj)
        return None if found is None else self.objects.get(found)
