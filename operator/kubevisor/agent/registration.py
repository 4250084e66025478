"""The agent's own HypervisorHost and Lease: registration, heartbeat, shared storage.

`register` creates the host object when it is missing and applies its status (facts,
capabilities, storage, cached images, the tunnel endpoint) when it changed. The heartbeat
renews the Lease the controller judges the host by, and polls the host object (one GET of
its own) so that a changed spec (PCI allow-list, shared storage) is registered within
seconds, and a deleted object comes back: created again from the labels and spec its
agent last read, while the VMs here keep running (their domains are not touched).

The last reading of spec.sharedStorage and of libvirt's security driver is kept here for
the parts that place files and render domains.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from pydantic import ValidationError

from kubevisor import metrics
from kubevisor.agent import hoststatus, probe
from kubevisor.agent.settings import Settings
from kubevisor.agent.vmfiles import VmFiles
from kubevisor.agent.vms import BoundVms
from kubevisor.api import quantity
from kubevisor.api.hypervisorhost import PciPassthroughRule, SharedStorage, SharedStorageStatus
from kubevisor.core.domain.host import Ovmf, shared_cpus
from kubevisor.drivers.base import HostFacts, Hypervisor
from kubevisor.kube.client import Kube, Object
from kubevisor.kube.errors import is_not_found

log = logging.getLogger("kubevisor.agent")


class LeaseGuard(Protocol):
    """What renews the Lease for the heartbeat when self-fencing is on (`SelfFence`)."""

    async def renew(self, renew: Callable[[], Awaitable[None]]) -> None: ...


class HostRegistration:
    def __init__(
        self,
        *,
        settings: Settings,
        kube: Kube,
        hypervisor: Hypervisor,
        files: VmFiles,
        vms: BoundVms,
        lease_guard: LeaseGuard | None = None,
    ) -> None:
        self._settings = settings
        self._guard = lease_guard
        self._kube = kube
        self._hv = hypervisor
        self._files = files
        self._vms = vms
        self._written: dict[str, Any] | None = None
        """The status last applied; None: read the object's before applying."""
        self._generation: int | None = None
        """metadata.generation of the host spec the last registration read."""
        self._last_seen: Object | None = None
        """The host object as last read: what to create it again from, if it is deleted."""
        self._shared: SharedStorage | None = None
        self._shared_cpus: frozenset[int] | None = None
        self._security_model: str | None = None

    @property
    def name(self) -> str:
        return str(self._settings.host)

    @property
    def shared(self) -> SharedStorage | None:
        """The host's spec.sharedStorage, as last read."""
        return self._shared

    @property
    def shared_cpus(self) -> frozenset[int] | None:
        """The CPUs its spec gives shared VMs (`domain.host.shared_cpus`), as last read."""
        return self._shared_cpus

    @property
    def security_model(self) -> str | None:
        """libvirt's security driver here (apparmor, selinux, none) as its capabilities
        said at the last registration; None: not registered yet, or not reported."""
        return self._security_model

    # -- registration --------------------------------------------------------------------

    async def register(self) -> None:
        """Create the HypervisorHost if missing and apply its facts when they changed."""
        facts = await self._hv.host_facts()
        self._security_model = probe.security_driver(facts.security_models)
        # The allow-list and shared storage may change at any time: read them every time.
        host = await self._kube.get_host(self.name)
        if host is None:
            host = await self._create()
        self._seen(host)
        self._read_shared(host)
        wanted = await self._status(facts, probe.pci_rules(host))
        if self._written is None:
            existing = host.get("status") or {}
            self._written = {k: existing.get(k) for k in wanted}
        if self._written != wanted:
            await self._apply(wanted)

    async def _create(self) -> Object:
        """Create the host object: new, or again after it was deleted while this agent ran,
        then from the labels and spec the agent last read, so nothing an admin set is lost
        (to retire a host, stop its agent before deleting the object)."""
        before = self._last_seen or {}
        labels = dict((before.get("metadata") or {}).get("labels") or {})
        spec = dict(before.get("spec") or {})
        if before:
            log.warning("HypervisorHost %s was deleted; registering it again", self.name)
        self._written = None
        return await self._kube.create_host(self.name, labels=labels, spec=spec)

    def _seen(self, host: Object) -> None:
        self._last_seen = host
        self._generation = (host.get("metadata") or {}).get("generation")

    async def _apply(self, wanted: dict[str, Any]) -> None:
        try:
            await self._kube.apply_host_status(self.name, wanted)
        except Exception as error:
            if is_not_found(error):
                # Deleted since it was read: the next registration creates it again.
                self._written = None
            raise
        self._written = wanted

    async def _status(self, facts: HostFacts, rules: list[PciPassthroughRule]) -> dict[str, Any]:
        """The host's status as this agent sees it now."""
        settings = self._settings
        settings.image_dir.mkdir(parents=True, exist_ok=True)
        disk = facts.disk_bytes or shutil.disk_usage(settings.image_dir).total
        ksm = probe.ksm()
        if ksm is not None:
            metrics.KSM_PAGES_SHARED.set(ksm.pages_shared or 0)
            metrics.KSM_PAGES_SHARING.set(ksm.pages_sharing or 0)
            metrics.KSM_RUNNING.set(1 if ksm.running else 0)
        images = self._files.images
        wanted = hoststatus.host_status(
            facts,
            domain_type=settings.domain_type,
            domain_type_message=settings.domain_type_message,
            disk_bytes=disk,
            ksm=ksm,
            storage=probe.storage(
                disk_root=settings.state_dir / "vms",
                virtual_bytes=_provisioned(self._vms.objects()),
                image_cache_bytes=images.usage(),
            ),
            images=hoststatus.cached_images(images.entries(), self._files.images_in_use()),
            capabilities=probe.capabilities(
                Ovmf(),
                security_models=facts.security_models,
                cgroup_controllers=settings.cgroup_controllers,
                qemu_conf=settings.qemu_conf,
                containers=settings.domain_type == "lxc",
            ),
            pci_devices=probe.pci_inventory(rules, await self._hv.pci_devices()) if rules else [],
        )
        if settings.console_endpoint:
            wanted["consoleEndpoint"] = settings.console_endpoint
        if settings.metrics_endpoint:
            wanted["metricsEndpoint"] = settings.metrics_endpoint
        if settings.tunnel_ip is not None:
            wanted["network"] = {"tunnelEndpoint": str(settings.tunnel_ip)}
        if settings.self_fence_after:
            # The controller cannot read this agent's flags: it delays failover by this.
            wanted["selfFence"] = {"deadlineSeconds": settings.self_fence_after}
        if self._shared is not None:
            wanted.setdefault("storage", {})["shared"] = _shared_status(self._shared).to_wire()
        return wanted

    # -- heartbeat -----------------------------------------------------------------------

    async def renew_lease(self) -> None:
        await self._kube.renew_lease(
            namespace=self._settings.lease_namespace,
            name=self.name,
            duration=self._settings.lease_duration,
        )

    async def heartbeat(self) -> None:
        """Renew the Lease every quarter of its duration (through the lease guard when
        self-fencing is on: not while fenced), and follow the host object."""
        interval = self._settings.lease_duration / 4
        while True:
            await asyncio.sleep(interval)
            try:
                if self._guard is None:
                    await self.renew_lease()
                else:
                    await self._guard.renew(self.renew_lease)
            except Exception:
                log.exception("could not renew the Lease of host %s", self.name)
            try:
                await self.follow_spec()
            except Exception:
                log.exception("could not read the HypervisorHost %s", self.name)

    async def follow_spec(self) -> None:
        """Register again when an admin changed the host's spec (PCI allow-list, shared
        storage) or deleted the object: polled with the heartbeat, one GET."""
        host = await self._kube.get_host(self.name)
        if host is None or (host.get("metadata") or {}).get("generation") != self._generation:
            await self.register()
        else:
            self._last_seen = host  # labels change no generation

    # -- shared storage ------------------------------------------------------------------

    async def refresh_shared(self) -> SharedStorage | None:
        """Read the host's shared storage and CPUs now: the heartbeat's reading may be
        seconds old."""
        self._read_shared(await self._kube.get_host(self.name))
        return self._shared

    def _read_shared(self, host: Object | None) -> None:
        spec = (host or {}).get("spec") or {}
        try:
            self._shared_cpus = shared_cpus(
                cpu_shared_set=spec.get("cpuSharedSet"),
                cpu_dedicated_set=spec.get("cpuDedicatedSet"),
            )
        except ValueError as invalid:
            log.error("ignoring the host's spec.cpuSharedSet: %s", invalid)
            self._shared_cpus = None
        raw = spec.get("sharedStorage")
        try:
            shared = SharedStorage.model_validate(raw) if raw else None
        except ValidationError as invalid:
            log.error("ignoring the host's spec.sharedStorage: %s", invalid)
            shared = None
        if shared != self._shared:
            log.info("shared storage of host %s: %s", self.name, shared)
        self._shared = shared


def _shared_status(shared: SharedStorage) -> SharedStorageStatus:
    """The shared storage as this host sees it: size and free space when it is mounted."""
    try:
        usage = shutil.disk_usage(shared.path)
    except OSError:
        return SharedStorageStatus(name=shared.name, path=shared.path)
    return SharedStorageStatus(
        name=shared.name,
        path=shared.path,
        capacity=quantity.format_bytes(usage.total),
        available=quantity.format_bytes(usage.free),
    )


def _provisioned(vms: Iterable[Object]) -> int:
    """Virtual bytes of the disks of the VMs bound here (what disk ratios count)."""
    total = 0
    for obj in vms:
        for disk in (obj.get("spec") or {}).get("disks") or []:
            if disk.get("size"):
                total += quantity.to_bytes(str(disk["size"]))
    return total
