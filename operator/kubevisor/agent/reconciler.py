"""One reconcile of one VM bound to this host: observe, decide, act, report.

The agent's workers call `reconcile` with a VM key. It reads the VM as the watch last
delivered it and the domain as libvirt reports it now, asks `core.convergence.decide` what
to do (holding a start while the disks' images download, see `pulls`), acts, and asks
`core.status` what to report, writing the VM's status only when it changed. A VM that is
gone (deleted, or bound to another host) has its domain shut down and removed with its
files. Errors are reported in the VM's status first, then raised for the worker to back
off: retryable ones with their delay, permanent ones too (a new spec is tried at once).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from typing import Any, Protocol

from pydantic import ValidationError

from kubevisor import metrics
from kubevisor.agent import hostpaths, probe, restore
from kubevisor.agent.network import NetworkNotReady
from kubevisor.agent.pulls import ImagePulls
from kubevisor.agent.settings import Settings
from kubevisor.agent.vmfiles import ImageRejected, VmFiles
from kubevisor.agent.vms import BoundVms
from kubevisor.agent.workqueue import WorkQueue
from kubevisor.api import schema
from kubevisor.api.conditions import Condition
from kubevisor.api.hypervisorhost import SharedStorage
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core import convergence, resizing, status
from kubevisor.core.convergence import Action, DomainObservation
from kubevisor.core.domain import converter, document, identity
from kubevisor.core.domain.host import HostEnvironment, Nic
from kubevisor.core.imagepulls import ImagePullState, PullFailure
from kubevisor.core.placement import inputs, resize
from kubevisor.core.resizing import ResizeNote
from kubevisor.core.status import AgentError
from kubevisor.drivers.base import (
    DomainNotFound,
    Hypervisor,
    HypervisorError,
    PermanentError,
    RetryableError,
)
from kubevisor.kube.client import Kube, Object

log = logging.getLogger("kubevisor.agent")

PULL_PROGRESS_INTERVAL = 1.0
"""Seconds between reconciles of a VM whose image downloads, so its status shows progress."""


class Host(Protocol):
    """What the reconciler reads of its host (the HostRegistration)."""

    @property
    def shared(self) -> SharedStorage | None: ...

    @property
    def shared_cpus(self) -> frozenset[int] | None: ...

    @property
    def security_model(self) -> str | None: ...

    async def refresh_shared(self) -> SharedStorage | None: ...


class Network(Protocol):
    """What the reconciler asks of the host's networks (the HostNetworking)."""

    async def attach(self, vm: VirtualMachine, uid: str) -> dict[str, Nic]: ...


class Migrations(Protocol):
    """What the reconciler asks of the VMs migrating away (the Migrator)."""

    def migrating_to(self, vm_key: str) -> str | None: ...

    def moving_cold(self, vm_key: str) -> bool: ...

    def is_departed(self, uid: str) -> bool: ...

    def forget_departed(self, uid: str) -> bool: ...


async def remove_domain(
    hv: Hypervisor, files: VmFiles, uid: str, *, shared: SharedStorage | None = None
) -> None:
    """Undefine a (stopped) domain and remove the VM's files here, and in `shared` too."""
    with contextlib.suppress(DomainNotFound):
        await hv.undefine(uid)
    files.remove(uid, shared=shared)


class Reconciler:
    def __init__(
        self,
        *,
        settings: Settings,
        kube: Kube,
        hypervisor: Hypervisor,
        vms: BoundVms,
        files: VmFiles,
        host: Host,
        pulls: ImagePulls,
        migrations: Migrations,
        queue: WorkQueue,
        network: Network | None = None,
    ) -> None:
        self._settings = settings
        self._kube = kube
        self._hv = hypervisor
        self._vms = vms
        self._files = files
        self._host = host
        self._pulls = pulls
        self._migrations = migrations
        self._queue = queue
        self._network = network
        self._written: dict[str, dict[str, Any]] = {}
        """The last status applied per key: skips writes the watch has not echoed yet."""

    def invalidate(self, key: str) -> None:
        """The watch delivered the VM: fresher than anything written before it."""
        self._written.pop(key, None)

    async def reconcile(self, key: str) -> None:
        obj = self._vms.get(key)
        uid = self._vms.uid(key)
        if obj is None:
            await self._gone(key, uid)
            return
        assert uid is not None
        if self._migrations.is_departed(uid) or _status(obj).get("host") != self._settings.host:
            # Migrated away or being unbound: the controller writes status.host before the
            # label, so the label may still say this host. Nothing of it to start here.
            return
        try:
            vm = VirtualMachine.model_validate(obj)
        except ValidationError as invalid:
            await self._write_invalid(key, obj, invalid)
            return
        await self._converge(key, obj, vm, uid)

    async def _gone(self, key: str, uid: str | None) -> None:
        """Deleted, or bound to another host now: nothing of it may stay here."""
        self._pulls.forget(key)
        if uid is None:
            return
        if self._migrations.forget_departed(uid):
            self._files.remove(uid)
        else:
            await self._shutdown_and_remove(uid)
        self._vms.forget(key)

    async def _converge(self, key: str, obj: Object, vm: VirtualMachine, uid: str) -> None:
        current = _status(obj)
        # Read before observing: a transfer that ends during `_observe` leaves the domain
        # gone and the VM departed, which is checked again below.
        migrating_to = self._migrations.migrating_to(key)
        observed = await self._observe(uid)
        if self._migrations.is_departed(uid):
            return
        deleting = bool(obj["metadata"].get("deletionTimestamp"))
        evicting = _evicting(current, self._settings.host)
        plan = convergence.decide(
            convergence.Situation(
                run_strategy=vm.spec.run_strategy,
                paused=vm.spec.paused,
                deleting=deleting,
                evicting=evicting is not None,
                migrating=migrating_to is not None,
                domain=observed,
            )
        )
        held = self._resize_hold(vm, plan)
        plan = convergence.held_for_resize(plan, pending=held is not None)
        pulls: tuple[ImagePullState, ...] = ()
        pull_failed: PullFailure | None = None
        if convergence.needs_images(plan):
            pulls, pull_failed = await self._pull(key, obj, vm, uid)
            plan = convergence.waiting_for_images(plan, pulling=bool(pulls))
        failed = await self._act_all(plan.actions, vm, uid)
        restarted = plan.restart and failed is None
        if plan.actions:
            observed = await self._observe(uid)
        await self._write_status(
            key,
            obj,
            vm,
            observed=observed,
            deleting=deleting,
            error=_agent_error(failed),
            restart_count=int(current.get("restartCount") or 0) + restarted,
            migrating_to=migrating_to,
            evicting=evicting,
            pulls=pulls,
            resize=held,
        )
        if pulls and pull_failed is None:
            self._queue.add_after(key, PULL_PROGRESS_INTERVAL)
        _raise(pull_failed, failed)

    def _resize_hold(self, vm: VirtualMachine, plan: convergence.Plan) -> ResizeNote | None:
        """Why a start waits (None: it does not): the spec's size is not the one the
        controller claimed here (`core.resizing`). Starting it would run a size placement
        does not hold; the controller's claim, written to status, brings the VM back."""
        pending = inputs.resize_pending(vm)
        if convergence.held_for_resize(plan, pending=pending) == plan:
            return None
        assert vm.status is not None
        return resizing.resize_hold(
            vm.status.conditions,
            size=resize.describe(inputs.request(vm)),
            host=self._settings.host,
        )

    async def _pull(
        self, key: str, obj: Object, vm: VirtualMachine, uid: str
    ) -> tuple[tuple[ImagePullState, ...], PullFailure | None]:
        # Where the images go and the overlays will be depends on the host's shared
        # storage: read once here, for the pulls and `environment` alike.
        shared = await self._host.refresh_shared()
        generation = int(obj["metadata"].get("generation", 0))
        return self._pulls.pull(key, vm, uid, generation=generation, shared=shared)

    async def _observe(self, uid: str) -> DomainObservation | None:
        try:
            with metrics.timed(metrics.LIBVIRT_CALL_DURATION, "state"):
                info = await self._hv.state(uid)
        except DomainNotFound:
            return None
        hardware = ""
        if info.state.value not in ("shutoff", "crashed"):
            with contextlib.suppress(DomainNotFound):
                ref = identity.read_metadata(await self._hv.domain_xml(uid))
                hardware = ref.hardware if ref is not None else ""
        return DomainObservation(
            uuid=info.uuid,
            state=info.state,
            reason=info.reason,
            hardware=hardware,
        )

    async def _act_all(
        self, actions: tuple[Action, ...], vm: VirtualMachine, uid: str
    ) -> HypervisorError | None:
        """Perform the actions in order; the error that stopped them, if one did."""
        try:
            for action in actions:
                log.info("%s/%s: %s", vm.metadata.get("namespace"), vm.metadata.get("name"), action)
                with metrics.timed(metrics.LIBVIRT_CALL_DURATION, action.value):
                    await self._perform(action, vm, uid)
        except (RetryableError, PermanentError) as failed:
            return failed
        return None

    async def _perform(self, action: Action, vm: VirtualMachine, uid: str) -> None:
        if action is Action.DEFINE_AND_START:
            try:
                xml = converter.render(vm, host=await self.environment(vm, uid))
            except document.DomainError as invalid:
                raise PermanentError(str(invalid)) from invalid
            # After the render's checks, before any file is used: never under a guest.
            await restore.restore_pending(
                vm, uid, files=self._files, kube=self._kube, shared=self._host.shared
            )
            await self._hv.define(xml)
            await self._hv.start(uid)
        elif action is Action.SHUTDOWN:
            await self._hv.shutdown(uid, timeout=self._settings.shutdown_grace)
        elif action is Action.DESTROY:
            await self._hv.destroy(uid)
        elif action is Action.SUSPEND:
            await self._hv.suspend(uid)
        elif action is Action.RESUME:
            await self._hv.resume(uid)
        elif action is Action.REMOVE:
            # Shared overlays go only with the VM itself: evicted, it runs on elsewhere.
            deleted = bool(vm.metadata.get("deletionTimestamp"))
            shared = self._host.shared if deleted else None
            await remove_domain(self._hv, self._files, uid, shared=shared)

    async def environment(self, vm: VirtualMachine, uid: str) -> HostEnvironment:
        """This host as the domain XML needs it, with the VM's files created here (in the
        host's shared storage as last read), the spec's host paths resolved inside the
        directories the host's admin allows (else HostPathRefused), the host's shared CPUs
        as last read, libvirt's security driver, which a VM requiring confinement is
        labelled for, and the VM's Networks realised here (raises NetworkNotReady when one
        is not)."""
        # Before any file is made for it: a VM naming a host path it may not use fails here.
        host_paths = hostpaths.resolve_spec(vm.spec, self._settings.host_paths)
        nics = await self._network.attach(vm, uid) if self._network is not None else {}
        files = await self._files.prepare(vm, uid, shared=self._host.shared)
        return HostEnvironment(
            domain_type=self._settings.domain_type,
            disk_paths=files.disk_paths,
            seed_iso=files.seed_iso,
            serial_log=files.serial_log,
            default_boot=self._settings.default_boot,
            nvram=str(self._files.directory(uid) / "nvram.fd"),
            vhost_net=probe.VHOST_NET.exists(),
            cgroup_controllers=self._settings.cgroup_controllers,
            shared_cpus=self._host.shared_cpus,
            security_model=self._host.security_model,
            nics=nics,
            host_paths=host_paths,
            container_ids=self._settings.container_ids,
        )

    async def _shutdown_and_remove(self, uid: str) -> None:
        try:
            info = await self._hv.state(uid)
        except DomainNotFound:
            self._files.remove(uid)
            return
        if info.state.value not in ("shutoff", "crashed"):
            await self._hv.shutdown(uid, timeout=self._settings.shutdown_grace)
        await remove_domain(self._hv, self._files, uid)

    # -- status --------------------------------------------------------------------------

    async def _write_status(
        self,
        key: str,
        obj: Object,
        vm: VirtualMachine,
        *,
        observed: DomainObservation | None,
        deleting: bool,
        error: AgentError | None,
        restart_count: int,
        migrating_to: str | None = None,
        evicting: str | None = None,
        pulls: tuple[ImagePullState, ...] = (),
        resize: ResizeNote | None = None,
    ) -> None:
        current = _status(obj)
        previous = [Condition.model_validate(c) for c in current.get("conditions") or []]
        # Only the facts `unenforced_limits` reads: `environment` would create the VM's files.
        limits = HostEnvironment(
            domain_type=self._settings.domain_type,
            cgroup_controllers=self._settings.cgroup_controllers,
        )
        wanted = status.bound_vm_status(
            status.Inputs(
                spec=vm.spec,
                generation=int(obj["metadata"].get("generation", 0)),
                deleting=deleting,
                domain=observed,
                hardware=identity.hardware_fingerprint(vm.spec),
                error=error,
                migrating_to=migrating_to,
                moving_cold=migrating_to is not None and self._migrations.moving_cold(key),
                evicting=evicting,
                unenforced=tuple(converter.unenforced_limits(vm, limits)),
                pulls=pulls,
                resize=resize,
            ),
            previous_phase=current.get("phase"),
            previous=previous,
            restart_count=restart_count,
            now=datetime.datetime.now(datetime.UTC).replace(microsecond=0),
        )
        storage = self._files.storage(obj["metadata"]["uid"], self._host.shared)
        if storage is not None:
            wanted["storage"] = {**storage.to_wire(), "host": self._settings.host}
        if not status.differs(current, wanted) or self._written.get(key) == wanted:
            return
        await self._apply(key, obj, wanted)

    async def _write_invalid(self, key: str, obj: Object, invalid: ValidationError) -> None:
        """A VM the API server accepted but this agent cannot read: say so, never crash."""
        message = f"the agent cannot read this VM: {invalid.errors()[0].get('msg', invalid)}"
        wanted = {
            "phase": "Failed",
            "observedGeneration": int(obj["metadata"].get("generation", 0)),
            "conditions": [
                {
                    "type": "Stalled",
                    "status": "True",
                    "reason": "InvalidSpec",
                    "message": message,
                    "lastTransitionTime": _now(),
                },
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "InvalidSpec",
                    "message": message,
                    "lastTransitionTime": _now(),
                },
            ],
        }
        if self._written.get(key, {}).get("conditions", [{}])[0].get("message") == message:
            return
        await self._apply(key, obj, wanted)

    async def _apply(self, key: str, obj: Object, wanted: dict[str, Any]) -> None:
        meta = obj["metadata"]
        await self._kube.apply_vm_status(meta["namespace"], meta["name"], wanted)
        self._written[key] = wanted


def _status(obj: Object) -> dict[str, Any]:
    return dict(obj.get("status") or {})


def _evicting(current: dict[str, Any], host: str) -> str | None:
    """The reason of the eviction status.eviction records from this host, if any."""
    eviction = current.get("eviction") or {}
    return eviction.get("reason") if eviction.get("host") == host else None


def _agent_error(failed: HypervisorError | None) -> AgentError | None:
    """A failed action as the VM's status reports it."""
    if failed is None:
        return None
    if isinstance(failed, NetworkNotReady):
        return AgentError(permanent=False, reason=failed.reason, message=str(failed))
    if isinstance(failed, RetryableError):
        return AgentError(permanent=False, reason="HypervisorBusy", message=str(failed))
    if isinstance(failed, ImageRejected | hostpaths.HostPathRefused):
        return AgentError(permanent=True, reason=failed.reason, message=str(failed))
    return AgentError(permanent=True, reason="DomainRejected", message=str(failed))


def _raise(pull_failed: PullFailure | None, failed: HypervisorError | None) -> None:
    """Raise what the worker backs off by, once the status reported it: a failed download
    first (a permanent one before a retryable one), then a failed action."""
    if pull_failed is not None and pull_failed.permanent:
        raise PermanentError(pull_failed.message)
    if pull_failed is not None:
        raise RetryableError(pull_failed.message, delay=pull_failed.retry_in or 0.0)
    if isinstance(failed, RetryableError):
        raise failed
    if failed is not None:
        # Reported above; raised so the worker backs off before trying again.
        raise PermanentError(str(failed))


def _now() -> str:
    return schema.timestamp(datetime.datetime.now(datetime.UTC))
