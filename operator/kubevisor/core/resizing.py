"""The hand-off of a resize between the agent and the controller, in conditions.

A changed size (cpu, memory, NUMA, disks, devices) takes effect when the domain is next
defined. The agent never defines it from a spec whose size the controller has not claimed
(`placement.inputs.resize_pending`): it holds the start and says so in its Ready condition
(`ResizePending`). That is the controller's cue: it checks the new size against the host
(`placement.resize`) and either claims it and records it in status.placement.size, which
releases the agent, or refuses it in its Scheduled condition (`ResizeRefused`, with the
figures), which the agent repeats in Ready while it keeps the VM stopped.

`core.status` builds both sides' conditions from these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kubevisor.api import conditions as cond
from kubevisor.api.conditions import Condition

RESIZE_PENDING = "ResizePending"
"""Ready's reason while the agent holds a start until the controller claims a new size."""
RESIZE_REFUSED = "ResizeRefused"
"""The reason (Ready, the agent's; Scheduled, the controller's) once the new size does not
fit on the host."""
RESIZED = "Resized"


@dataclass(frozen=True, slots=True)
class ResizeNote:
    """What became of a new size, for a condition to say: `refused` (the message gives
    the figures), or not (claimed, or waited for)."""

    refused: bool
    message: str


def resize_hold(previous: Sequence[Condition], *, size: str, host: str) -> ResizeNote:
    """Why the agent holds a start whose new size (`size`, as `placement.resize.describe`
    reads) is not claimed on `host`: the controller's refusal, when its Scheduled condition
    says it refused, else a wait for its claim."""
    scheduled = cond.find(list(previous), cond.SCHEDULED)
    if scheduled is not None and scheduled.reason == RESIZE_REFUSED:
        return ResizeNote(refused=True, message=scheduled.message or RESIZE_REFUSED)
    return ResizeNote(
        refused=False, message=f"waiting for the controller to claim {size} on host {host}"
    )


def holding_for_resize(previous: Sequence[Condition]) -> bool:
    """Whether the agent says it holds a start for the claim of a new size (its Ready
    reason): the controller's cue to check the new size against the host. The agent
    writes it only when no domain runs, so the claim can follow without ever describing
    a size other than the one running."""
    ready = cond.find(list(previous), cond.READY)
    return ready is not None and ready.reason in (RESIZE_PENDING, RESIZE_REFUSED)
