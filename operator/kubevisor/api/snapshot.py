"""The VirtualMachineSnapshot custom resource: a point-in-time copy of one VM's disks.

Users create it naming a VM of their namespace; the agent of the VM's host copies each
disk into an immutable, self-contained image in that host's content-addressed image cache
(named by its sha256, like a downloaded base image) and lists the images in the status.
The spec is immutable: a snapshot is taken once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import ConfigDict, Field, StringConstraints

from kubevisor.api.conditions import Condition, conditions_field, observed_generation_field
from kubevisor.api.schema import (
    ApiModel,
    ApiObject,
    DnsLabel,
    Message,
    ObjectName,
    rule,
    validations,
)
from kubevisor.api.virtualmachine import ImageFormat

KIND: Final = "VirtualMachineSnapshot"
MAX_BYTES: Final = 1 << 60
"""Bound of the byte counts: an exbibyte, beyond any disk."""

Phase = Literal["Pending", "InProgress", "Ready", "Failed"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Ready", "Failed"})

Consistency = Literal["Stopped", "GuestFrozen", "CrashConsistent"]

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$", max_length=64)]
Reason = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=64)]


class VirtualMachineSnapshotSpec(ApiModel):
    """Which VM to copy. Immutable."""

    model_config = ConfigDict(
        json_schema_extra=validations(rule("self == oldSelf", "spec is immutable"))
    )

    vm: ObjectName = Field(
        description="Name of the VirtualMachine in this namespace whose disks to copy.",
    )


class SnapshotDisk(ApiModel):
    """One disk's copy: a self-contained image in the host's image cache."""

    name: DnsLabel = Field(description="The VM disk this image copies.")
    sha256: Sha256 = Field(
        description="SHA-256 of the image file: its name in the host's image cache."
    )
    size: int = Field(ge=0, le=MAX_BYTES, description="Bytes of the image file.")
    virtual_size: int | None = Field(
        default=None, ge=0, le=MAX_BYTES, description="Virtual size of the disk in bytes."
    )
    format: ImageFormat = Field(default="qcow2", description="Format of the image file.")


class VirtualMachineSnapshotStatus(ApiModel):
    """Observed state of the snapshot, written by the agent of the VM's host."""

    phase: Phase | None = Field(default=None, description="Pending, InProgress, Ready or Failed.")
    reason: Reason | None = Field(
        default=None,
        description=(
            "Why it failed, one CamelCase word: DiskNotFound, Unsupported, DiskFull, "
            "CopyFailed, AgentRestarted."
        ),
    )
    message: Message | None = Field(default=None, description="What happened, in words.")
    host: ObjectName | None = Field(
        default=None, description="HypervisorHost that took the snapshot and keeps its images."
    )
    vm_uid: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, alias="vmUID", description="uid of the VM the snapshot copies."
    )
    consistency: Consistency | None = Field(
        default=None,
        description=(
            "Stopped (the VM was not running: a consistent copy), GuestFrozen (the guest "
            "agent froze the filesystems) or CrashConsistent (as after a power cut)."
        ),
    )
    disks: list[SnapshotDisk] = Field(
        default_factory=list,
        max_length=32,
        description="The images, one per disk with a file.",
    )
    size: int | None = Field(
        default=None, ge=0, le=MAX_BYTES, description="Bytes of all images together."
    )
    size_text: Annotated[str, StringConstraints(max_length=32)] | None = Field(
        default=None, description="size for humans (e.g. 12.5MiB), the printer column."
    )
    start_time: datetime | None = Field(default=None, description="When the copy started.")
    completion_time: datetime | None = Field(
        default=None, description="When the snapshot reached Ready or Failed."
    )
    conditions: list[Condition] = conditions_field(
        "Ready (True once the images exist), Reconciling while copying, Stalled on failure."
    )
    observed_generation: int | None = observed_generation_field()


class VirtualMachineSnapshot(ApiObject):
    """A whole VirtualMachineSnapshot object, for reading manifests and watch events."""

    kind: Literal["VirtualMachineSnapshot"] = Field(
        default=KIND, description="VirtualMachineSnapshot."
    )
    spec: VirtualMachineSnapshotSpec = Field(description="Which VM to copy.")
    status: VirtualMachineSnapshotStatus | None = Field(default=None, description="Observed state.")
