"""Resizing bound VMs: a new size is claimed on the VM's host before its agent starts it.

A changed spec (more vCPUs, memory, huge pages, dedicated CPUs...) takes effect when the
domain is next defined. The agent holds such a start (`core.resizing`): its Ready reason
ResizePending is the cue. Then, under the placement lock, `core.placement.resize` checks
the new size against the host with the VM's current claim set aside:

- it fits: the claim is replaced and status.placement records the new size (and NUMA
  fit); the agent sees its spec's size claimed and starts the domain from it;
- it does not, or the namespace's quota cannot take the new size (the old one set aside):
  the old claim stays (nothing larger runs), the Scheduled condition says
  why with the figures (ResizeRefused) and a Warning event once per refusal; the agent
  keeps the VM stopped. It is tried again whenever a claim is released (capacity freed)
  and on every change of the VM: shrinking the spec, or setting it back, starts it.

A VM is never moved by a resize: with local disks a cold move would start it elsewhere
without its disk changes.
"""

from __future__ import annotations

import logging

from kubevisor.api import conditions
from kubevisor.api.conditions import SCHEDULED
from kubevisor.api.virtualmachine import PlacementStatus, VirtualMachine
from kubevisor.core import resizing
from kubevisor.core import status as vmstatus
from kubevisor.core.placement import inputs, resize
from kubevisor.core.resizing import ResizeNote
from kubevisor.handlers.port import ControllerPort
from kubevisor.kube.client import Object

log = logging.getLogger("kubevisor.controller.resizes")


class Resizes:
    def __init__(self, controller: ControllerPort) -> None:
        self.c = controller
        self.refused: dict[str, str] = {}
        """The refusal message per VM whose new size did not fit: tried again on release."""

    async def check(self, key: str, obj: Object, vm: VirtualMachine, host: str) -> None:
        """Claim or refuse a bound VM's new size once its agent holds the start for it."""
        status = vm.status
        assert status is not None
        if not inputs.resize_pending(vm):
            self.refused.pop(key, None)
            scheduled = conditions.find(status.conditions, SCHEDULED)
            if scheduled is not None and scheduled.reason == resizing.RESIZE_REFUSED:
                # The spec is back at the claimed size: the refusal is no longer true.
                size = resize.describe(inputs.claimed_request(vm))
                note = ResizeNote(refused=False, message=f"runs at {size}, the size claimed")
                await self._write(obj, vm, host, note)
            return
        if status.eviction is not None or host not in self.c.state:
            return
        if not resizing.holding_for_resize(status.conditions):
            return  # a domain may run at the old size: the claim stays what runs
        async with self.c.lock:
            # The new size counts against the namespace's quota, its old size set aside.
            over = self.c.quotas.refusal(key, vm)
            if over is None:
                outcome: resize.Resized | resize.Refused | str = resize.resize(
                    self.c.state, inputs.request(vm), host=host
                )
            else:
                outcome = f"resize to {resize.describe(inputs.request(vm))} refused: {over.message}"
        if not isinstance(outcome, resize.Resized):
            message = outcome if isinstance(outcome, str) else outcome.message
            await self._write(obj, vm, host, ResizeNote(refused=True, message=message))
            if self.refused.get(key) != message:
                self.refused[key] = message
                log.info("%s: %s", key, message)
                await self.c.event(obj, "Warning", resizing.RESIZE_REFUSED, message)
            return
        self.refused.pop(key, None)
        placement = inputs.placement_status(outcome.claim.numa, size=inputs.claimed_size(vm))
        message = f"resized to {resize.describe(inputs.request(vm))} on host {host}"
        try:
            await self._write(
                obj, vm, host, ResizeNote(refused=False, message=message), placement=placement
            )
        except Exception:
            # The size did not reach the status: hold the old claim, as the agent does.
            async with self.c.lock:
                self.c.state.release(key)
                if outcome.previous is not None:
                    self.c.state.claim(outcome.previous)
            raise
        log.info("%s: %s", key, message)
        await self.c.event(obj, "Normal", resizing.RESIZED, message)
        await self.c.retry_pending()  # a smaller size frees capacity

    async def _write(
        self,
        obj: Object,
        vm: VirtualMachine,
        host: str,
        note: ResizeNote,
        *,
        placement: PlacementStatus | None = None,
    ) -> None:
        current = vm.status.placement if vm.status is not None else None
        binding = vmstatus.Binding(host=host, placement=placement or current)
        await self.c.write_vm_status(obj, binding=binding, resize=note)

    async def retry(self) -> None:
        """Capacity was freed: check every refused resize again."""
        for key in list(self.refused):
            await self.c.reconcile_vm(key)

    def forget(self, key: str) -> None:
        self.refused.pop(key, None)
