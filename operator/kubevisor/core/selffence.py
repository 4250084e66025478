"""Self-fencing: when a host cut off from the API server stops its own guests, and when
the controller may start them elsewhere.

The agent (`agent.selffence.SelfFence`) measures from the renewTime it wrote in its last
Lease renewal that succeeded; once `deadline` seconds pass without another, it destroys its
kubevisor domains and stops renewing until the VMs it fenced are bound elsewhere (or no
longer restart after a host loss). The controller measures from the same renewTime: it
judges the host lost `timeout` seconds after it (the heartbeat timeout, by default the
Lease's duration) and starts the VMs elsewhere `grace` seconds later, but never before
`deadline + margin` seconds after it, the margin covering the time the destroys take and
the two clocks' skew. So no VM runs twice as long as

    timeout + grace >= deadline + margin

and where the flags break it the controller waits for the deadline instead, saying so in
the host's status (`failover_delay`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from kubevisor.api import schema
from kubevisor.core import powerfence
from kubevisor.core.conditions import Row

FENCED = "Fenced"
"""The host condition saying whether the guests of a lost host are known to be stopped."""

DEFAULT_MARGIN = 10.0
"""Seconds the controller adds to an agent's deadline: destroying its domains, clock skew."""


def due(*, renewed: float, now: float, deadline: float) -> bool:
    """Whether an agent whose last successful renewal wrote `renewed` must fence now
    (both seconds on the agent's monotonic clock)."""
    return now - renewed >= deadline


def notice(*, host: str, silent_for: float) -> str:
    """What the agent logs, and records as an event on each VM it fenced."""
    return f"self-fenced on host {host}: its Lease was not renewed for {silent_for:.0f}s"


def check_deadline(*, deadline: float, lease_duration: float) -> str | None:
    """Why an agent's `--self-fence-after` cannot work with its Lease, or None: it renews
    every quarter of the duration, and a single late renewal must not fence the host."""
    if deadline < lease_duration / 2:
        return (
            f"--self-fence-after {deadline:g}s is shorter than two renewals of the Lease "
            f"(--lease-duration {lease_duration:g}s renews every {lease_duration / 4:g}s): "
            f"use at least {lease_duration / 2:g}s, or 0 to turn self-fencing off"
        )
    return None


@dataclass(frozen=True, slots=True)
class FailoverDelay:
    """How long after its heartbeat expired a lost host's VMs may start elsewhere."""

    after: float
    """Seconds after the heartbeat expired (the judgement's down_for) failover may start."""
    message: str | None
    """Why it waits longer than the grace, for the host's status; None: it does not."""


def failover_delay(
    *, grace: float, timeout: float, deadline: float | None, margin: float
) -> FailoverDelay:
    """The failover delay of a host whose agent published self-fence `deadline` (None:
    none published, or self-fencing off: the grace alone, and nothing guards the split)."""
    if deadline is None:
        return FailoverDelay(grace, None)
    needed = deadline + margin - timeout
    if grace >= needed:
        return FailoverDelay(grace, None)
    return FailoverDelay(
        needed,
        f"failover waits {needed:.0f}s after the heartbeat expired, not the grace of "
        f"{grace:.0f}s: the agent fences itself {deadline:.0f}s after its last renewal, "
        f"plus a margin of {margin:.0f}s, and the host is judged lost {timeout:.0f}s after it",
    )


@dataclass(frozen=True, slots=True)
class Fenced:
    """A VM whose domain the agent destroyed while fenced, as the API server shows it now."""

    uid: str
    live_uid: str | None
    """The uid of the VM object under its name now; None: it is gone."""
    live_host: str | None
    """Its status.host now."""
    restarts: bool
    """Whether its run strategy restarts it after a host loss (the controller fails it over)."""


def holds(fenced: Fenced, *, host: str) -> bool:
    """Whether this fenced VM keeps its host fenced: it is still bound here and the controller
    will start it elsewhere once the host is judged lost, which a renewed Lease would stop.
    One that is gone, replaced, bound elsewhere or never failed over holds nothing."""
    return fenced.live_uid == fenced.uid and fenced.live_host == host and fenced.restarts


def fenced(
    *,
    ready: bool,
    silent_for: float | None,
    deadline: float | None,
    confirmed: datetime | None,
    now: datetime,
    power_fencing: bool = False,
    powered: powerfence.Outcome | None = None,
) -> tuple[Row, datetime | None]:
    """The host's Fenced condition and the time of its fence (None: none now), for a host
    whose agent last renewed `silent_for` seconds ago and published self-fence `deadline`;
    `confirmed`: when an evacuation confirmed by hand that the host is off;
    `power_fencing`: whether it has spec.fencing, `powered` its last power fence."""
    if ready:
        return Row(FENCED, "False", "HostReady", "the host is Ready: nothing is fenced"), None
    if confirmed is not None:
        return Row(
            FENCED, "True", "ConfirmedByHand", "the operator confirmed the host is off"
        ), confirmed
    if power_fencing:
        return powerfence.fenced(powered)
    if deadline is None:
        return Row(
            FENCED,
            "False",
            "NoFencing",
            "the host's agent does not fence itself and no power fencing is configured: its "
            "guests may still run",
        ), None
    if silent_for is None or silent_for < deadline:
        return Row(
            FENCED,
            "False",
            "AwaitingSelfFence",
            f"the host's agent fences itself {deadline:.0f}s after its last renewal",
        ), None
    at = now - timedelta(seconds=silent_for - deadline)
    return Row(
        FENCED,
        "True",
        "SelfFenced",
        f"the host's agent fenced itself at {schema.timestamp(at)}, {deadline:.0f}s after its "
        "last renewal (if it ran and reached its libvirtd)",
    ), at
