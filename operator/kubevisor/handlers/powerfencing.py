"""Power fencing of lost hosts, for the controller's failover (`handlers.evacuation`).

A lost host with spec.fencing is powered off through its BMC (`drivers.power`) with the
credentials of its Secret, read at each fence from the controller's namespace; the outcome
(`core.powerfence.Outcome`) is kept per host while the host stays lost, recorded as an
event on the host, and decides its failover: at once after a confirmed power-off, not at
all after a failed one, which is tried again (`core.powerfence.due`). A host that is Ready
again starts afresh.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import ValidationError

from kubevisor.api.hypervisorhost import Fencing
from kubevisor.core import powerfence
from kubevisor.drivers import power
from kubevisor.handlers.port import ControllerPort
from kubevisor.kube.client import Kube

log = logging.getLogger("kubevisor.controller.fencing")

Connect = Callable[..., power.Bmc]
"""`drivers.power.connect`'s shape: (fencing, credentials, *, timeout) -> Bmc."""


class PowerFencing:
    def __init__(
        self,
        controller: ControllerPort,
        kube: Kube,
        *,
        namespace: str,
        timeout: float = powerfence.DEFAULT_TIMEOUT,
        connect: Connect = power.connect,
    ) -> None:
        """`namespace`: where the credentials Secrets are; `timeout`: the bound of one fence;
        `connect`: builds a host's BMC (tests hand in a fake)."""
        self.c = controller
        self.kube = kube
        self.namespace = namespace
        self.timeout = timeout
        self.connect = connect
        self.outcomes: dict[str, powerfence.Outcome] = {}
        """Per lost host: its last power fence since it was lost."""

    def configured(self, host: str) -> Fencing | None:
        """The host's spec.fencing (None: none, or none the model reads)."""
        spec = (self.c.host(host) or {}).get("spec") or {}
        if not spec.get("fencing"):
            return None
        try:
            return Fencing.model_validate(spec["fencing"])
        except ValidationError:
            return None

    def outcome(self, host: str) -> powerfence.Outcome | None:
        return self.outcomes.get(host)

    def forget(self, host: str) -> None:
        """The host is Ready again (or gone): a later loss fences it again."""
        self.outcomes.pop(host, None)

    async def fence_if_due(self, host: str) -> powerfence.Outcome | None:
        """Power the lost host off now unless it is off or its last failure is too recent;
        returns its last outcome (None: the host has no spec.fencing)."""
        fencing = self.configured(host)
        if fencing is None:
            return None
        before = self.outcomes.get(host)
        if not powerfence.due(before, now=self.c.clock()):
            return before
        description = power.describe(fencing)
        log.warning("host %s is lost: powering it off through %s", host, description)
        try:
            credentials = await self._credentials(fencing)
            bmc = self.connect(fencing, credentials, timeout=self.timeout)
            took = await power.power_off(bmc, timeout=self.timeout)
        except power.FenceError as error:
            outcome = powerfence.failed(
                before, reason=error.reason, error=error.message, at=self.c.clock()
            )
            log.error("host %s: %s", host, outcome.message)
        else:
            outcome = powerfence.succeeded(bmc=description, at=self.c.clock(), took=took)
            log.warning("host %s: %s", host, outcome.message)
        self.outcomes[host] = outcome
        obj = self.c.host(host)
        if obj is not None:
            if outcome.off:
                await self.c.event(obj, "Normal", powerfence.POWERED_OFF, outcome.message)
            else:
                await self.c.event(
                    obj, "Warning", powerfence.FENCING_FAILED, powerfence.blocked(host, outcome)
                )
        return outcome

    async def _credentials(self, fencing: Fencing) -> power.Credentials:
        bmc = fencing.redfish or fencing.ipmi
        assert bmc is not None
        where = f"Secret {self.namespace}/{bmc.credentials_secret}"
        try:
            data = await self.kube.read_secret(self.namespace, bmc.credentials_secret)
        except Exception as error:
            raise power.FenceError(
                "CredentialsUnreadable", f"the controller cannot read {where}: {error}"
            ) from error
        if data is None:
            raise power.FenceError("CredentialsMissing", f"{where} does not exist")
        missing = [key for key in ("username", "password") if not data.get(key)]
        if missing:
            raise power.FenceError(
                "CredentialsMissing", f"{where} has no {' and no '.join(missing)} key"
            )
        return power.Credentials(data["username"], data["password"])
