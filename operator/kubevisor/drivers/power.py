"""Power fencing through a host's BMC: Redfish through sushy (the OpenStack Redfish
client), IPMI over LAN through pyghmi.

The controller (`handlers.evacuation`) builds a `Bmc` from a host's spec.fencing and the
credentials it read from its Secret (`connect`), and `power_off` asks it for power Off and
polls until it reports Off. Both libraries block: every call runs on a worker thread under
a timeout, so a BMC that hangs holds neither the event loop nor the fence beyond its bound
(the thread itself ends with the library's own socket timeout). Nothing here knows
Kubernetes: what the fence means for the VMs is `core.powerfence`'s.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

import sushy
from pyghmi.ipmi import command
from sushy import connector
from sushy import exceptions as redfish

from kubevisor.api.hypervisorhost import Fencing, IpmiFencing, RedfishFencing

POLL_INTERVAL = 0.5
"""Seconds between two readings of the power state while waiting for Off."""


class FenceError(Exception):
    """A fence that did not confirm power Off; `reason` is the host condition's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Credentials:
    """The BMC account, from the Secret spec.fencing names (keys username and password)."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"


class Bmc(Protocol):
    """One host's power, as a BMC reports and switches it; both calls block."""

    description: str
    """What the messages call it, e.g. "Redfish BMC https://10.0.0.5 (system 1)"."""

    def is_off(self) -> bool:
        """Whether the BMC reports the host's power Off."""
        ...

    def force_off(self) -> None:
        """Cut the host's power now (no graceful shutdown: the guests must not go on)."""
        ...


def describe(fencing: Fencing) -> str:
    if fencing.redfish is not None:
        system = fencing.redfish.system_id
        return f"Redfish BMC {fencing.redfish.address}" + (f" (system {system})" if system else "")
    assert fencing.ipmi is not None
    return f"IPMI BMC {fencing.ipmi.address}:{fencing.ipmi.port}"


def connect(fencing: Fencing, credentials: Credentials, *, timeout: float) -> Bmc:
    """The BMC of spec.fencing; it opens its session at its first call (`timeout`: the
    bound of one request)."""
    if fencing.redfish is not None:
        return Redfish(fencing.redfish, credentials, timeout=timeout)
    assert fencing.ipmi is not None
    return Ipmi(fencing.ipmi, credentials)


async def power_off(bmc: Bmc, *, timeout: float, interval: float = POLL_INTERVAL) -> float:
    """Power the host off and wait until its BMC reports Off; returns the seconds it took.
    Raises FenceError when the BMC fails, or does not report Off within `timeout`."""
    started = time.monotonic()
    deadline = started + timeout

    async def call(what: str, function: Any) -> Any:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FenceError(
                "Timeout", f"{bmc.description} did not confirm power Off within {timeout:.0f}s"
            )
        try:
            return await asyncio.wait_for(asyncio.to_thread(function), left)
        except TimeoutError:
            raise FenceError(
                "Timeout", f"{bmc.description} did not answer {what} within {timeout:.0f}s"
            ) from None
        except FenceError:
            raise
        except Exception as error:
            raise classify(bmc.description, error) from error

    if not await call("a power state reading", bmc.is_off):
        await call("a power-off request", bmc.force_off)
        while not await call("a power state reading", bmc.is_off):
            if time.monotonic() + interval >= deadline:
                raise FenceError(
                    "Timeout",
                    f"{bmc.description} accepted the power-off but still reports power On "
                    f"{timeout:.0f}s later",
                )
            await asyncio.sleep(interval)
    return time.monotonic() - started


def classify(description: str, error: Exception) -> FenceError:
    """A library's exception as a FenceError with a reason the host condition carries."""
    text = str(error) or type(error).__name__
    if isinstance(error, redfish.AccessError):
        return FenceError("BMCRefusedCredentials", f"{description} refused the credentials: {text}")
    if isinstance(error, redfish.ConnectionError | ConnectionError | OSError):
        return FenceError("BMCUnreachable", f"{description} cannot be reached: {text}")
    if isinstance(error, redfish.ResourceNotFoundError):
        return FenceError("SystemNotFound", f"{description} has no such system: {text}")
    if "unauthorized" in text.lower() or "incorrect password" in text.lower():
        return FenceError("BMCRefusedCredentials", f"{description} refused the credentials: {text}")
    return FenceError("BMCError", f"{description} failed: {text}")


class Redfish:
    """A Redfish BMC through sushy: the system's PowerState, and Reset with ForceOff."""

    def __init__(self, spec: RedfishFencing, credentials: Credentials, *, timeout: float) -> None:
        self.spec = spec
        self.credentials = credentials
        self.timeout = timeout
        self.description = describe(Fencing(redfish=spec))
        self._system: Any = None

    def _connect(self) -> Any:
        if self._system is None:
            address = self.spec.address.rstrip("/")
            verify = not self.spec.insecure_skip_tls_verify
            root = sushy.Sushy(
                address,
                username=self.credentials.username,
                password=self.credentials.password,
                verify=verify,
                # One try per request, each bounded by the fence's timeout: `power_off`
                # retries by polling, and a worker thread must not outlive its fence by
                # sushy's default three tries.
                connector=connector.Connector(
                    address,
                    verify=verify,
                    default_request_timeout=self.timeout,
                    server_side_retries=1,
                    server_side_retries_delay=1,
                ),
            )
            system = self.spec.system_id
            self._system = root.get_system(
                None if system is None else f"{root.get_system_collection().path}/{system}"
            )
        return self._system

    def is_off(self) -> bool:
        system = self._connect()
        system.refresh(force=True)
        return bool(system.power_state == sushy.PowerState.OFF)

    def force_off(self) -> None:
        self._connect().reset_system(sushy.ResetType.FORCE_OFF)


class Ipmi:
    """An IPMI BMC through pyghmi: chassis power status and chassis control power down."""

    def __init__(self, spec: IpmiFencing, credentials: Credentials) -> None:
        self.spec = spec
        self.credentials = credentials
        self.description = describe(Fencing(ipmi=spec))
        self._command: Any = None

    def _connect(self) -> Any:
        if self._command is None:
            self._command = command.Command(
                bmc=self.spec.address,
                userid=self.credentials.username,
                password=self.credentials.password,
                port=self.spec.port,
                keepalive=False,
            )
        return self._command

    def is_off(self) -> bool:
        reply = self._connect().get_power()
        return bool(reply.get("powerstate") == "off")

    def force_off(self) -> None:
        self._connect().set_power("off", wait=False)
