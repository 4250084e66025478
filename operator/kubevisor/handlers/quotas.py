"""Namespace quotas (`core.quota`) in the controller: read, enforced, published.

The controller (handlers/controller.py) calls this module at a few points:

- `load` and `on_quota` follow the ResourceQuotas that name kubevisor's resources
  (`kubevisor.io/vcpus`, ...); a quota changed or deleted retries every waiting VM, so a
  VM kept out by a limit that was raised is placed by itself;
- `refusal`, under the placement lock and before placement, says whether the VM's
  namespace can take it: what the namespace's VMs hold is kept from the very claims the
  lock protects (`quota.Ledger` follows the placement state), so two VMs placed in a
  burst never both take the last vCPU of a quota;
- `publish` writes `status.hard` and `status.used` of kubevisor's resources on the
  namespace's quotas when they changed (the controller's field manager; the quota
  controller of kube-controller-manager keeps `used` values of resources it has no
  evaluator for, and writes its own keys beside them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kubevisor.api import objects
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core import quota
from kubevisor.core.placement import inputs
from kubevisor.core.quota import Ledger, Quota
from kubevisor.handlers.networks import Unplaced
from kubevisor.handlers.port import ControllerPort
from kubevisor.kube.client import Kube, Object
from kubevisor.kube.errors import is_not_found, is_transient

log = logging.getLogger("kubevisor.controller.quotas")

FILTER = "quota"
"""The placement metric's reason for a VM a quota kept out."""


def _limits(obj: Object) -> tuple[Quota, tuple[str, ...]]:
    hard = (obj.get("spec") or {}).get("hard") or {}
    limits, problems = quota.hard_limits(hard)
    return Quota(obj["metadata"]["name"], limits), problems


class Quotas:
    """The namespaces' quotas on kubevisor's resources, and what their VMs hold."""

    def __init__(self, port: ControllerPort, kube: Kube) -> None:
        self.port = port
        self.kube = kube
        self.ledger = Ledger()
        self.ledger.follow(port.state)
        self.quotas: dict[str, dict[str, Quota]] = {}
        """Per namespace, its quotas that limit at least one of kubevisor's resources."""
        self.objects: dict[str, Object] = {}
        """Each such ResourceQuota as last seen or written, by namespace/name."""
        self.problems: dict[str, tuple[str, ...]] = {}
        """What could not be read of each quota, so it is logged once."""

    # -- the quotas -------------------------------------------------------------------

    def load(self, quotas: Iterable[Object]) -> None:
        """Start-up: every ResourceQuota (after the placement state was built)."""
        self._used("")
        for obj in quotas:
            self._remember(obj)

    def _remember(self, obj: Object) -> bool:
        """Cache a quota; True when its limits on kubevisor's resources changed."""
        meta = obj["metadata"]
        key = objects.key(meta)
        namespace = meta["namespace"]
        if objects.stale(obj, self.objects.get(key)):
            return False
        limits, problems = _limits(obj)
        if problems and self.problems.get(key) != problems:
            log.warning("quota %s: %s", key, "; ".join(problems))
        self.problems[key] = problems
        before = self.quotas.get(namespace, {}).get(meta["name"])
        if not limits.hard:
            self._drop(namespace, meta["name"])
            return before is not None
        self.objects[key] = obj
        self.quotas.setdefault(namespace, {})[meta["name"]] = limits
        return before != limits

    def _drop(self, namespace: str, name: str) -> None:
        self.objects.pop(f"{namespace}/{name}", None)
        self.problems.pop(f"{namespace}/{name}", None)
        held = self.quotas.get(namespace)
        if held is not None:
            held.pop(name, None)
            if not held:
                del self.quotas[namespace]

    async def resync(self, quotas: list[Object]) -> None:
        """The quotas as the API server lists them now (`handlers.listing.resync`): a lost
        watch event changes nothing for longer than a resync interval."""
        listed = {objects.key(obj["metadata"]) for obj in quotas}
        changed = False
        for namespace, held in list(self.quotas.items()):
            for name in list(held):
                if f"{namespace}/{name}" not in listed:
                    self._drop(namespace, name)
                    changed = True
        for obj in quotas:
            changed = self._remember(obj) or changed
        if changed:
            await self.port.retry_pending()
        await self.publish_all()

    async def on_quota(self, event: str | None, obj: Object) -> None:
        meta = obj["metadata"]
        namespace = meta["namespace"]
        if event == "DELETED":
            had = meta["name"] in self.quotas.get(namespace, {})
            self._drop(namespace, meta["name"])
            if had:
                await self.port.retry_pending()
            return
        if self._remember(obj):
            log.info("quota %s changed: retrying the VMs waiting for a host", objects.key(meta))
            await self.port.retry_pending()
        await self.publish(namespace)

    # -- the VMs ------------------------------------------------------------------------

    def _used(self, namespace: str, *, besides: str | None = None) -> dict[str, int]:
        if self.ledger.following is not self.port.state:
            # The controller built its state anew (start-up): count that one's claims.
            self.ledger.follow(self.port.state)
        return self.ledger.used(namespace, besides=besides)

    def refusal(self, key: str, vm: VirtualMachine) -> Unplaced | None:
        """Why the VM's namespace cannot take it now (None: it can, or has no quota).
        Called under the placement lock, right before placement."""
        namespace = quota.namespace_of(key)
        limits = self.quotas.get(namespace)
        if not limits:
            return None
        used = self._used(namespace, besides=key)
        wanted = quota.requested(inputs.request(vm))
        by_name = [limits[name] for name in sorted(limits)]
        exceeded = quota.admit(by_name, used=used, wanted=wanted)
        if exceeded is None:
            return None
        return Unplaced(FILTER, quota.QUOTA_EXCEEDED, exceeded.message)

    # -- status ---------------------------------------------------------------------------

    async def publish(self, namespace: str) -> None:
        """Write what the namespace's VMs hold into its quotas' status, where it changed.
        Never raises: a status is a report, and the next change or resync writes it."""
        limits = self.quotas.get(namespace)
        if not limits:
            return
        used = self._used(namespace)
        for name, limit in sorted(limits.items()):
            key = f"{namespace}/{name}"
            obj = self.objects.get(key) or {}
            # status.hard as the quota controller writes it: spec.hard, verbatim.
            spec_hard = (obj.get("spec") or {}).get("hard") or {}
            hard = {r: str(spec_hard[r]) for r in limit.hard if r in spec_hard}
            wanted = quota.status_used(limit, used)
            status = obj.get("status") or {}
            shown_hard, shown_used = status.get("hard") or {}, status.get("used") or {}
            if all(shown_used.get(r) == v for r, v in wanted.items()) and all(
                shown_hard.get(r) == v for r, v in hard.items()
            ):
                continue
            try:
                reply = await self.kube.apply_quota_status(namespace, name, hard=hard, used=wanted)
            except Exception as error:
                if is_not_found(error):
                    continue  # deleted meanwhile: its watch event drops it
                if not is_transient(error):
                    log.warning("quota %s: could not write its status: %s", key, error)
                continue
            self.objects[key] = reply

    async def publish_all(self) -> None:
        for namespace in sorted(self.quotas):
            await self.publish(namespace)
