"""The MigrationJob custom resource: one migration of one VirtualMachine, live or cold.

Users (or the controller, when draining a host) create it; the controller orchestrates
it and the source host's agent reports progress, each in its own status fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from pydantic import ConfigDict, Field, model_validator

from kubevisor.api.conditions import Condition, conditions_field, observed_generation_field
from kubevisor.api.schema import (
    ApiModel,
    ApiObject,
    Message,
    ObjectName,
    ShortText,
    UriText,
    rule,
    validations,
)
from kubevisor.api.virtualmachine import PlacementStatus

KIND: Final = "MigrationJob"

Mode = Literal["Live", "Cold"]
Phase = Literal["Pending", "Scheduling", "Preparing", "Running", "Succeeded", "Failed", "Cancelled"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Cancelled"})

# Bounds of the migration options: 1 TiB/s is beyond any network; a day per GiB or
# without progress is beyond any migration worth waiting for; QEMU refuses a
# downtime-limit above 2000 s (MAX_MIGRATE_DOWNTIME_SECONDS).
MAX_BANDWIDTH_MIBPS = 1024 * 1024
MAX_TIMEOUT_SECONDS = 86400
MAX_DOWNTIME_MS = 2_000_000


class MigrationOptions(ApiModel):
    """Tuning of the live migration (Nova's live_migration_* options)."""

    bandwidth_mi_bps: int | None = Field(
        default=None,
        ge=0,
        le=MAX_BANDWIDTH_MIBPS,
        alias="bandwidthMiBps",
        description="Bandwidth cap in MiB/s; 0 or unset: unlimited.",
    )
    auto_converge: bool | None = Field(
        default=None,
        description="Throttle the guest's vCPUs when memory is dirtied faster than it is copied.",
    )
    post_copy: bool | None = Field(
        default=None,
        description=(
            "Switch to post-copy when pre-copy does not converge: the guest runs on the "
            "target and pulls the remaining pages (a network failure then loses the guest)."
        ),
    )
    completion_timeout_per_gi_b: int = Field(
        default=150,
        ge=1,
        le=MAX_TIMEOUT_SECONDS,
        alias="completionTimeoutPerGiB",
        description=(
            "Seconds allowed per GiB of guest memory before the migration is aborted "
            "(Nova's live_migration_completion_timeout)."
        ),
    )
    progress_timeout: int = Field(
        default=150,
        ge=1,
        le=MAX_TIMEOUT_SECONDS,
        description="Seconds without progress in remaining data before the migration is aborted.",
    )
    max_downtime_ms: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DOWNTIME_MS,
        description="Longest pause of the guest allowed for the final switch-over, in ms.",
    )


class MigrationJobSpec(ApiModel):
    """What to migrate, where, and how."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "has(self.targetHost) == has(oldSelf.targetHost)",
                "targetHost is immutable",
                field_path=".targetHost",
            ),
            rule(
                "self.mode != 'Cold' || !has(self.options.postCopy) || !self.options.postCopy",
                "postCopy applies to live migrations only (mode: Cold stops the guest)",
                field_path=".options.postCopy",
            ),
            rule(
                "self.mode != 'Cold' || !has(self.options.autoConverge)"
                " || !self.options.autoConverge",
                "autoConverge applies to live migrations only (mode: Cold stops the guest)",
                field_path=".options.autoConverge",
            ),
            rule(
                "self.mode != 'Cold' || !has(self.options.maxDowntimeMs)",
                "maxDowntimeMs applies to live migrations only (mode: Cold stops the guest)",
                field_path=".options.maxDowntimeMs",
            ),
        )
    )

    vm: ObjectName = Field(
        description="Name of the VirtualMachine in this namespace to migrate. Immutable.",
        json_schema_extra=validations(rule("self == oldSelf", "vm is immutable")),
    )
    target_host: ObjectName | None = Field(
        default=None,
        description=(
            "HypervisorHost to migrate to. Unset: placement picks one as for a new VM. Immutable."
        ),
        json_schema_extra=validations(rule("self == oldSelf", "targetHost is immutable")),
    )
    mode: Mode = Field(
        default="Live",
        description=(
            "Live: the guest keeps running while its memory and local disks are copied. "
            "Cold: the guest is shut down on the source, its local disks are copied and it "
            "boots on the target with the same identity (for VMs that should not or cannot "
            "move live). Immutable."
        ),
        json_schema_extra=validations(rule("self == oldSelf", "mode is immutable")),
    )
    cancel: bool = Field(
        default=False,
        description=(
            "Set to true to abort the migration; the VM stays on the source. Cannot be unset."
        ),
        json_schema_extra=validations(
            rule("!oldSelf || self", "cancel cannot be set back to false")
        ),
    )
    options: MigrationOptions = Field(
        default_factory=MigrationOptions,
        description="Bandwidth, convergence and timeouts.",
        json_schema_extra={"default": {}},
    )

    @model_validator(mode="after")
    def _live_options_live_only(self) -> MigrationJobSpec:
        """The CEL rules above: a cold move has no running guest to converge."""
        options = self.options
        if self.mode == "Cold":
            for name, value in (
                ("postCopy", options.post_copy),
                ("autoConverge", options.auto_converge),
                ("maxDowntimeMs", options.max_downtime_ms),
            ):
                if value:
                    raise ValueError(f"{name} applies to live migrations only (mode: Cold)")
        return self


class Progress(ApiModel):
    """Live migration progress as libvirt's job info reports it."""

    data_total: int | None = Field(default=None, ge=0, description="Bytes to transfer in total.")
    data_processed: int | None = Field(default=None, ge=0, description="Bytes transferred.")
    data_remaining: int | None = Field(default=None, ge=0, description="Bytes left to transfer.")
    iteration: int | None = Field(default=None, ge=0, description="Pre-copy memory pass number.")
    bandwidth_bps: int | None = Field(
        default=None, ge=0, description="Current bandwidth in bytes/s."
    )
    percent: int | None = Field(default=None, ge=0, le=100, description="Percent done (0-100).")


TransferState = Literal["Running", "Succeeded", "Failed", "Cancelled"]


class TargetStatus(ApiModel):
    """The target host's agent's part: ready to receive, and how to reach it."""

    ready: bool = Field(default=False, description="Files and domain XML prepared.")
    libvirt_uri: UriText | None = Field(
        default=None,
        alias="libvirtURI",
        description="libvirt URI the source host's libvirtd reaches the target at.",
    )
    migrate_uri: UriText | None = Field(
        default=None,
        alias="migrateURI",
        description="URI of the target's QEMU for the memory stream; unset: libvirt's choice.",
    )
    domain_xml: str | None = Field(
        default=None,
        alias="domainXML",
        description="The domain as the target renders it (its paths, the target's pins).",
    )
    vm_uid: ShortText | None = Field(
        default=None, alias="vmUID", description="uid of the VM the target prepared for."
    )
    message: Message | None = Field(default=None, description="Why the target could not prepare.")


class TransferStatus(ApiModel):
    """The source host's agent's part: the libvirt migration job itself."""

    state: TransferState = Field(description="Running, Succeeded, Failed or Cancelled.")
    message: Message | None = Field(default=None, description="What happened, when it ended.")
    post_copy: bool | None = Field(
        default=None, description="True once the transfer switched to post-copy."
    )


class MigrationJobStatus(ApiModel):
    """Observed state of the migration.

    One writer per field: the controller owns phase, source, target, targetPlacement, times,
    reason and conditions; the target's agent owns `targetAgent`; the source's agent owns
    `transfer` and `progress`.
    """

    phase: Phase | None = Field(
        default=None,
        description="Pending, Scheduling, Preparing, Running, Succeeded, Failed or Cancelled.",
    )
    source: ObjectName | None = Field(default=None, description="Host the VM migrates from.")
    target: ObjectName | None = Field(default=None, description="Host the VM migrates to.")
    target_placement: PlacementStatus | None = Field(
        default=None, description="NUMA cells, pins and pages claimed on the target."
    )
    target_agent: TargetStatus | None = Field(
        default=None, description="The target agent's preparation."
    )
    transfer: TransferStatus | None = Field(
        default=None, description="The source agent's transfer."
    )
    progress: Progress | None = Field(default=None, description="Transfer progress.")
    start_time: datetime | None = Field(default=None, description="When the transfer started.")
    completion_time: datetime | None = Field(
        default=None, description="When the migration reached a terminal phase."
    )
    reason: Message | None = Field(default=None, description="Why it failed or was cancelled.")
    conditions: list[Condition] = conditions_field(
        "Ready (True once Succeeded), Reconciling while running, Stalled on failure."
    )
    observed_generation: int | None = observed_generation_field()


class MigrationJob(ApiObject):
    """A whole MigrationJob object, for reading manifests and watch events."""

    kind: Literal["MigrationJob"] = Field(default=KIND, description="MigrationJob.")
    spec: MigrationJobSpec = Field(description="What to migrate, where, and how.")
    status: MigrationJobStatus | None = Field(default=None, description="Observed state.")
