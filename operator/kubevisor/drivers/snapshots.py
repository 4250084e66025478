"""Point-in-time copies of a running guest's disks: the shape a hypervisor driver offers
the agent for VM snapshots (README "Snapshots and clones").

A driver that can copy a running domain's disks without stopping it implements
`DiskCopier`; the agent checks for it with isinstance and fails a snapshot of a running
VM with reason Unsupported on a hypervisor that cannot (a stopped VM's overlays it copies
itself with qemu-img).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class DiskCopy:
    """One disk to copy: the file the domain uses, and the new file to write (which must
    not exist; the driver writes a self-contained qcow2 there, the guest's view of the
    disk with every backing layer folded in)."""

    source: str
    target: str


@dataclass(frozen=True, slots=True)
class CopyOutcome:
    """How the copy was taken."""

    frozen: bool
    """The guest agent froze the guest's filesystems for the moment the copy was cut."""
    cut_seconds: float
    """How long the point-in-time cut took (freeze, job start, thaw): the guest's I/O
    pause; the copy itself runs after it while the guest goes on."""


@runtime_checkable
class DiskCopier(Protocol):
    async def copy_running_disks(
        self, uuid: str, copies: Sequence[DiskCopy], *, quiesce: bool, timeout: float
    ) -> CopyOutcome:
        """Copy the disks of the running domain `uuid` as they are at one instant.

        With `quiesce`, the guest agent freezes the filesystems around that instant where
        the guest runs one (else the copy is crash-consistent). Raises RetryableError or
        PermanentError; a failed copy leaves no target file behind.
        """
        ...
