"""kstatus's Compute for custom resources, from the published rules (kubernetes-sigs/
cli-utils pkg/kstatus/status: generic.go checkGenericProperties, status.go Compute and
checkReadyCondition). Flux's `wait`/healthChecks and `kubectl wait` read objects this way.

Built-in kinds have extra legacy rules in kstatus (core.go); custom resources never reach
them, so they are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CURRENT = "Current"
IN_PROGRESS = "InProgress"
FAILED = "Failed"
TERMINATING = "Terminating"


@dataclass(frozen=True)
class Result:
    status: str
    message: str


def compute(obj: dict[str, Any]) -> Result:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    conditions = status.get("conditions") or []
    # 1. generic properties: deletion, then generation, then Reconciling / Stalled.
    if meta.get("deletionTimestamp"):
        return Result(TERMINATING, "Resource scheduled for deletion")
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return Result(
            IN_PROGRESS,
            f"{obj['kind']} generation is {generation}, but latest observed generation is "
            f"{observed}",
        )
    for condition in conditions:
        if condition.get("type") == "Reconciling" and condition.get("status") == "True":
            return Result(IN_PROGRESS, condition.get("message", ""))
        if condition.get("type") == "Stalled" and condition.get("status") == "True":
            return Result(FAILED, condition.get("message", ""))
    # 2. type-specific legacy rules: none for custom resources.
    # 3. the Ready condition fallback.
    for condition in conditions:
        if condition.get("type") != "Ready":
            continue
        if condition.get("status") == "True":
            return Result(CURRENT, "Resource is Ready")
        # False and Unknown alike: still in progress, with the condition's message.
        return Result(IN_PROGRESS, condition.get("message", ""))
    # 4. nothing else to go on.
    return Result(CURRENT, "Resource is current")
