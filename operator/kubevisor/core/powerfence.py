"""Power fencing: when the controller powers a lost host off through its BMC, what the
host's status says of it, and how the VMs' events name it.

A host with `spec.fencing` is fenced as soon as it is judged lost (its heartbeat expired):
the controller (`handlers.evacuation`) asks its BMC for power Off and polls until the BMC
reports it, within a bounded time (`drivers.power.power_off`). Once the BMC confirmed it,
the host's VMs start elsewhere at once, without the failover grace: nothing of the host
runs any more. A fence that fails (the BMC unreachable, refusing the credentials,
answering an error, or still reporting power On at the end) blocks the failover of that
host — its VMs stay Unknown — and is tried again after `retry_after`, until one succeeds,
the host is Ready again, or an operator confirms the host is off (`kubevisor evacuate
--confirm-fenced`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from kubevisor.api import schema
from kubevisor.core.conditions import Row

FENCING_FAILED = "FencingFailed"
"""The host condition saying whether the last power fence of a lost host failed."""

POWERED_OFF = "PoweredOff"

DEFAULT_TIMEOUT = 60.0
"""Seconds one fence may take, from the first call to the BMC to power Off confirmed."""

FIRST_RETRY = 15.0
LAST_RETRY = 300.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the last power fence of a lost host ended."""

    at: datetime
    off: bool
    """Whether the BMC confirmed power Off."""
    reason: str
    """POWERED_OFF, or why it failed (e.g. BMCUnreachable, BMCRefusedCredentials)."""
    message: str
    failures: int = 0
    """Fences that failed in a row, this one included."""


def retry_after(failures: int) -> float:
    """Seconds before trying again after `failures` fences failed in a row: 15, 30, 60...
    up to 5 minutes, so a BMC that is down is not hammered and one that recovers is soon
    used."""
    return min(LAST_RETRY, FIRST_RETRY * 2.0 ** max(failures - 1, 0))


def due(outcome: Outcome | None, *, now: datetime) -> bool:
    """Whether to power a lost host off now, given its last fence since it was lost."""
    if outcome is None:
        return True
    if outcome.off:
        return False
    return now >= outcome.at + timedelta(seconds=retry_after(outcome.failures))


def succeeded(*, bmc: str, at: datetime, took: float) -> Outcome:
    return Outcome(
        at,
        True,
        POWERED_OFF,
        f"{bmc} confirmed power Off at {schema.timestamp(at)}, {took:.1f}s after the "
        "power-off request",
    )


def failed(previous: Outcome | None, *, reason: str, error: str, at: datetime) -> Outcome:
    """A fence that failed with `error` (which names the BMC), after `previous`."""
    failures = (previous.failures if previous is not None and not previous.off else 0) + 1
    return Outcome(at, False, reason, f"powering the host off failed: {error}", failures)


def stopped(outcome: Outcome) -> str:
    """How the old copies were stopped, for the moved VMs' events."""
    return f"powered off: {outcome.message}"


def blocked(host: str, outcome: Outcome) -> str:
    """The FencingFailed message: what failed, when it is tried again, and the way out."""
    again = outcome.at + timedelta(seconds=retry_after(outcome.failures))
    return (
        f"{outcome.message} (attempt {outcome.failures}; next at {schema.timestamp(again)}). "
        f"The VMs of host {host} are not started elsewhere until a fence succeeds or an "
        f"operator confirms the host is off: kubevisor evacuate {host} --confirm-fenced"
    )


def fencing_failed(host: str, *, ready: bool, outcome: Outcome | None) -> Row:
    """The FencingFailed condition of a host with spec.fencing."""
    if ready:
        return Row(FENCING_FAILED, "False", "HostReady", "the host is Ready: nothing to fence")
    if outcome is None:
        return Row(FENCING_FAILED, "False", "NotAttempted", "no power fence has ended yet")
    if outcome.off:
        return Row(FENCING_FAILED, "False", POWERED_OFF, outcome.message)
    return Row(FENCING_FAILED, "True", outcome.reason, blocked(host, outcome))


def fenced(outcome: Outcome | None) -> tuple[Row, datetime | None]:
    """The Fenced condition of a lost host with spec.fencing and no confirmation by hand,
    and the time of its fence: its agent's self-fencing does not count, since the BMC was
    configured because the agent may not be able to stop its guests."""
    if outcome is not None and outcome.off:
        return Row("Fenced", "True", POWERED_OFF, outcome.message), outcome.at
    message = "powering the host off through its BMC" if outcome is None else outcome.message
    return Row("Fenced", "False", "AwaitingPowerOff", message), None
