"""What the controller's helpers may use of it.

`Migrations` (handlers/migrations.py) and `Evacuation` (handlers/evacuation.py) act on
VMs the controller owns: they read its caches and its placement state, and write VM
status, labels and events through it, so that every VM write updates the controller's
cache the same way. They depend on this Protocol, not on `Controller`, so neither module
imports the controller and the controller's private state stays its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from typing_extensions import Unpack

from kubevisor.core import status as vmstatus
from kubevisor.core.flavors import FlavorKey
from kubevisor.core.hosts import Judgement
from kubevisor.core.placement.state import PlacementState
from kubevisor.handlers.vmwrites import StatusNote
from kubevisor.kube.client import Object

if TYPE_CHECKING:
    from kubevisor.handlers.namespaces import Namespaces
    from kubevisor.handlers.networks import Networks
    from kubevisor.handlers.quotas import Quotas


class ControllerPort(Protocol):
    """The controller as its helpers see it (`handlers.controller.Controller` is one)."""

    state: PlacementState
    """Hosts and claims; claim or release only under `lock` when a decision depends on it."""
    lock: asyncio.Lock
    """Held while deciding and claiming, so two decisions never take the same capacity."""
    clock: Callable[[], datetime]
    networks: Networks
    """Addresses and Networks (handlers/networks.py): what placement asks of a VM's
    Networks (`networks.request`)."""
    quotas: Quotas
    """Namespace quotas (handlers/quotas.py): whether a VM's namespace can take its size."""
    namespaces: Namespaces
    """The namespaces' host pools (handlers/namespaces.py)."""

    def vm(self, key: str) -> Object | None:
        """The VM of `key` as last seen or written (None: unknown or deleted)."""
        ...

    def bound_to(self, host: str) -> list[tuple[str, Object]]:
        """(key, VM) of every VM whose status names `host`."""
        ...

    def vms_naming(self, flavor: FlavorKey) -> list[tuple[str, Object]]:
        """(key, VM) of every VM whose spec names the flavor `flavor`."""
        ...

    def remember_vm(self, obj: Object) -> None:
        """Cache a VM as a write returned it (unless the cache holds a newer version)."""
        ...

    def host(self, name: str) -> Object | None:
        """The HypervisorHost `name` as last seen."""
        ...

    def judgement(self, host: str) -> Judgement | None:
        """Whether the host's heartbeat is fresh (None: not judged yet)."""
        ...

    def hypervisor_type(self, host: str) -> str:
        """The host's hypervisor type as its agent reports it ("" when unknown)."""
        ...

    async def write_vm_status(
        self, obj: Object, *, binding: vmstatus.Binding | None, **note: Unpack[StatusNote]
    ) -> Object:
        """Apply the controller's part of the VM's status (`core.status`) if it changed;
        returns the VM as cached now."""
        ...

    async def label(self, obj: Object, host: str) -> Object:
        """Bind the VM to `host`: its host label and the controller's finalizer; returns
        the VM as patched."""
        ...

    async def unlabel(self, obj: Object) -> Object:
        """Remove the VM's host label (its status no longer names a host); returns the VM
        as patched."""
        ...

    async def event(self, obj: Object, type_: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event on `obj`; never fails the caller."""
        ...

    async def reconcile_vm(self, key: str) -> None:
        """Reconcile one VM now, as a watch event of it would."""
        ...

    async def retry_pending(self) -> None:
        """Reconcile every VM waiting for a host: capacity was freed."""
        ...
