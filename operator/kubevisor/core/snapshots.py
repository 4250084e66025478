"""VM snapshots decided: which agent takes one, how consistent it is, and its status.

The agent of the VM's host (agent/snapshots.py) asks `takes` whether a snapshot is its
own to take, copies the disks, and writes the status `status` builds for each step; all
of it pure, from explicit inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kubevisor.api import quantity
from kubevisor.api.conditions import READY, RECONCILING, STALLED
from kubevisor.api.schema import timestamp
from kubevisor.api.snapshot import TERMINAL_PHASES, Consistency, Phase, SnapshotDisk
from kubevisor.api.wire import HOST_LABEL
from kubevisor.core import conditions
from kubevisor.core.conditions import Row

# Reasons a snapshot fails with (status.reason, the Stalled condition's reason).
DISK_NOT_FOUND = "DiskNotFound"
UNSUPPORTED = "Unsupported"
DISK_FULL = "DiskFull"
COPY_FAILED = "CopyFailed"
AGENT_RESTARTED = "AgentRestarted"


def takes(snapshot: Mapping[str, Any], vm: Mapping[str, Any] | None, *, host: str) -> bool:
    """Whether the agent of `host` should take `snapshot` of `vm` now: not taken yet (or
    already being taken here), and the VM bound to this host."""
    status = snapshot.get("status") or {}
    if status.get("phase") in TERMINAL_PHASES:
        return False
    if status.get("host") not in (None, host):
        return False
    if vm is None:
        return False
    labels = (vm.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(HOST_LABEL) == host)


def consistency(*, running: bool, frozen: bool) -> Consistency:
    """How consistent a copy is: of a stopped VM, fully; of a running one, as of a power
    cut unless the guest agent froze its filesystems."""
    if not running:
        return "Stopped"
    return "GuestFrozen" if frozen else "CrashConsistent"


def size_text(count: int) -> str:
    """Bytes for the printer column: 12.5MiB, 1.0GiB, 512B."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def status(
    *,
    phase: Phase,
    host: str,
    vm_uid: str,
    previous: Mapping[str, Any] | None,
    generation: int,
    now: datetime,
    started: datetime,
    disks: Sequence[SnapshotDisk] = (),
    consistent: Consistency | None = None,
    reason: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """The whole status of a snapshot in `phase`, as its host's agent applies it."""
    wanted: dict[str, Any] = {
        "phase": phase,
        "host": host,
        "vmUID": vm_uid,
        "startTime": timestamp(started),
        "observedGeneration": generation,
    }
    if phase == "Ready":
        total = sum(disk.size for disk in disks)
        wanted |= {
            "consistency": consistent,
            "disks": [disk.to_wire() for disk in disks],
            "size": total,
            "sizeText": size_text(total),
            "completionTime": timestamp(now),
        }
        message = f"{len(disks)} image(s), {quantity.in_mib(total)}, {consistent}"
    elif phase == "Failed":
        wanted |= {"reason": reason, "message": message, "completionTime": timestamp(now)}
    wanted["conditions"] = conditions.wire(
        conditions.previous(previous),
        _rows(phase, reason=reason, message=message or phase),
        generation=generation,
        now=now,
    )
    return {key: value for key, value in wanted.items() if value is not None}


def _rows(phase: Phase, *, reason: str | None, message: str) -> list[Row]:
    failed = phase == "Failed"
    working = phase in ("Pending", "InProgress")
    why = reason or phase
    return [
        Row(READY, conditions.truth(phase == "Ready"), why, message),
        Row(RECONCILING, conditions.truth(working), phase if working else "Done", message),
        Row(STALLED, conditions.truth(failed), why if failed else "NotStalled", message),
    ]
