"""Evacuate on demand (Nova's `evacuate`): whether an operator's request to re-place every
VM of a host now is carried out, waits, or is refused, and how the old copies were stopped.

The controller (`handlers.evacuation`) asks on every check of a host whose spec.evacuate
names a request its status.evacuation has not settled yet (`pending`); the answer goes to
status.evacuation and an event, and an `EVACUATED` one unbinds the host's VMs at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kubevisor.core import powerfence

Outcome = Literal["Waiting", "Evacuated", "Refused"]

CONFIRMED = "confirmed stopped by hand (kubevisor evacuate --confirm-fenced)"


def self_fenced(deadline: float) -> str:
    """How the old copies were stopped on a host whose agent fences itself."""
    return (
        f"stopped by its host's agent, which fences itself {deadline:.0f}s after its last renewal"
    )


def pending(request: dict[str, object] | None, settled: dict[str, object] | None) -> bool:
    """Whether spec.evacuate holds a request status.evacuation has not settled: a new
    time, or one still Waiting."""
    if not request or not request.get("requestedAt"):
        return False
    if not settled or settled.get("requestedAt") != request["requestedAt"]:
        return True
    return settled.get("outcome") == "Waiting"


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    message: str
    stopped: str | None = None
    """How the VMs' old copies were stopped (for their events), when `Evacuated`."""


def decide(
    *,
    host: str,
    ready: bool,
    confirmed: bool,
    silent_for: float | None,
    deadline: float | None,
    margin: float,
    power_fencing: bool = False,
    powered: powerfence.Outcome | None = None,
) -> Verdict:
    """The request's verdict, for a host that is `ready` or not, whose agent last renewed
    its Lease `silent_for` seconds ago (None: never) and published self-fence `deadline`;
    `power_fencing`: whether it has spec.fencing, `powered` its last power fence (with
    spec.fencing only a power-off, or the operator's word, says its guests are stopped)."""
    if ready:
        return Verdict(
            "Refused",
            f"host {host} is Ready (its agent renews its Lease): only a lost host is evacuated",
        )
    if confirmed:
        return Verdict("Evacuated", f"every VM of host {host} is placed again", CONFIRMED)
    if power_fencing:
        if powered is not None and powered.off:
            return Verdict(
                "Evacuated", f"every VM of host {host} is placed again", powerfence.stopped(powered)
            )
        why = f" ({powered.message})" if powered is not None else ""
        return Verdict(
            "Waiting",
            f"waiting for host {host} to be powered off through its BMC{why}; if it is off, "
            "confirm it (kubevisor evacuate --confirm-fenced)",
        )
    if deadline is None:
        return Verdict(
            "Refused",
            f"host {host}'s agent does not fence itself: confirm the host is off "
            "(kubevisor evacuate --confirm-fenced)",
        )
    needed = deadline + margin
    if silent_for is None or silent_for < needed:
        left = needed - (silent_for or 0.0)
        return Verdict(
            "Waiting",
            f"waiting {left:.0f}s more for host {host}'s agent to have fenced itself "
            f"({deadline:.0f}s after its last renewal, plus a margin of {margin:.0f}s)",
        )
    return Verdict("Evacuated", f"every VM of host {host} is placed again", self_fenced(deadline))
