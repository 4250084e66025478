"""The controller's writes to a VirtualMachine: its part of the status, the host label
and finalizer, and Events.

`Controller` (handlers/controller.py) owns one `VmWrites` and its helpers reach it
through `handlers.port.ControllerPort`; every write hands the VM it returns to the
controller's cache (`Cache.remember_vm`), so the cache never lags behind a write this
controller made.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypedDict

from typing_extensions import Unpack

from kubevisor.api import objects
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.api.wire import CONTROLLER, HOST_LABEL, VM_FINALIZER
from kubevisor.core import conditions
from kubevisor.core import status as vmstatus
from kubevisor.core.resizing import ResizeNote
from kubevisor.kube.client import Kube, Object
from kubevisor.kube.errors import is_transient

log = logging.getLogger("kubevisor.controller")


class StatusNote(TypedDict, total=False):
    """What the controller has to say in a VM's status besides its binding (the
    parameter object of `write_vm_status`; each maps to a `core.status.ControllerInputs`
    field)."""

    unschedulable: str | None
    """Why no host fits (the message of the Unschedulable condition)."""
    why: str
    """The reason of that condition (default "Unschedulable")."""
    host_lost: str | None
    migrated_from: str | None
    last_migration: dict[str, Any] | None
    """Default: the VM's current `status.lastMigration`."""
    eviction: dict[str, Any] | None
    resize: ResizeNote | None


class Cache(Protocol):
    """The controller's VM cache as the writes see it."""

    def remember_vm(self, obj: Object) -> None: ...

    def vm(self, key: str) -> Object | None: ...

    def host(self, name: str) -> Object | None: ...


class VmWrites:
    def __init__(self, *, kube: Kube, cache: Cache, clock: Callable[[], datetime]) -> None:
        self.kube = kube
        self.cache = cache
        self.clock = clock
        self.labelled: dict[str, str] = {}
        """Host label this controller patched per VM, until the watch shows the VM gone."""

    async def label(self, obj: Object, host: str) -> Object:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if VM_FINALIZER not in finalizers:
            finalizers.append(VM_FINALIZER)
        reply = await self._patch_labels(obj, {HOST_LABEL: host}, finalizers=finalizers)
        self.labelled[objects.key(meta)] = host
        return reply

    async def unlabel(self, obj: Object) -> Object:
        reply = await self._patch_labels(obj, {HOST_LABEL: None})
        self.labelled.pop(objects.key(obj["metadata"]), None)
        return reply

    async def _patch_labels(
        self, obj: Object, labels: dict[str, str | None], *, finalizers: list[str] | None = None
    ) -> Object:
        meta = obj["metadata"]
        patch: dict[str, Any] = {"labels": labels}
        if finalizers is not None:
            patch["finalizers"] = finalizers
        reply = await self.kube.patch_vm(meta["namespace"], meta["name"], {"metadata": patch})
        self.cache.remember_vm(reply)
        return reply

    async def write_vm_status(
        self, obj: Object, *, binding: vmstatus.Binding | None, **note: Unpack[StatusNote]
    ) -> Object:
        """Apply the controller's part of the VM's status if it changed; returns the VM
        as cached now."""
        meta = obj["metadata"]
        key = objects.key(meta)
        current = obj.get("status") or {}
        wanted = vmstatus.controller_vm_status(
            self._inputs(obj, binding, note),
            previous_phase=current.get("phase"),
            previous=conditions.previous(current),
            now=self.clock(),
        )
        written = obj
        if vmstatus.differs(current, wanted):
            written = await self.kube.apply_vm_status(meta["namespace"], meta["name"], wanted)
            self.cache.remember_vm(written)
        if binding is None:
            await self._clear_binding(key, written)
        return self.cache.vm(key) or obj

    def _inputs(
        self, obj: Object, binding: vmstatus.Binding | None, note: StatusNote
    ) -> vmstatus.ControllerInputs:
        vm = VirtualMachine.model_validate(obj)
        current = obj.get("status") or {}
        return vmstatus.ControllerInputs(
            spec=vm.spec,
            generation=int(obj["metadata"].get("generation") or 0),
            binding=binding,
            unschedulable=note.get("unschedulable"),
            unschedulable_reason=note.get("why", "Unschedulable"),
            host_lost=note.get("host_lost"),
            host_missing=binding is not None and self.cache.host(binding.host) is None,
            migrated_from=note.get("migrated_from"),
            last_migration=note.get("last_migration") or current.get("lastMigration"),
            eviction=note.get("eviction"),
            resize=note.get("resize"),
        )

    async def _clear_binding(self, key: str, written: Object) -> None:
        """`written`, the VM as unbinding it left it, still names a host: another field
        manager wrote it too (a hand edit), so leaving it out of the apply kept it. Remove
        it outright, unless the VM changed since (then its next event decides again)."""
        status = written.get("status") or {}
        stale = {field: None for field in ("host", "placement") if field in status}
        if not stale:
            return
        log.warning("%s: clearing status %s, which another writer holds too", key, sorted(stale))
        meta = written["metadata"]
        reply = await self.kube.patch_vm_status(
            meta["namespace"],
            meta["name"],
            {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": stale},
        )
        if reply is not None:
            self.cache.remember_vm(reply)

    async def event(self, obj: Object, type_: str, reason: str, message: str) -> None:
        try:
            await self.kube.event(
                involved=obj, type_=type_, reason=reason, message=message, component=CONTROLLER
            )
        except Exception as error:
            # An event is a courtesy: losing one must not undo a placement.
            if not is_transient(error):
                log.warning("could not record event %s: %s", reason, error)
