"""The condition shape every kubevisor status carries (metav1.Condition's fields).

kstatus, Flux, Argo CD health scripts and `kubectl wait --for=condition=Ready` read these;
the status writers in core build them. The list is keyed by `type` in the CRD schema, so
server-side apply merges conditions one by one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from kubevisor.api.schema import ApiModel, list_map

ConditionStatus = Literal["True", "False", "Unknown"]

# Well-known condition types (kstatus reads Ready, Reconciling and Stalled).
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
SCHEDULED = "Scheduled"
SCHEDULABLE = "Schedulable"
MIGRATING = "Migrating"
PAUSED = "Paused"
IMAGE_PULLING = "ImagePulling"


class Condition(ApiModel):
    """One aspect of the object's state, following the Kubernetes condition conventions."""

    type: Annotated[
        str,
        StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9]*$", min_length=1, max_length=316),
    ] = Field(
        description=(
            "Condition type in CamelCase, unique in the list: Ready, Reconciling, Stalled, "
            "Scheduled, Migrating, Paused, ImagePulling (VirtualMachine), Ready and Schedulable "
            "(HypervisorHost), Ready (MigrationJob)."
        ),
    )
    status: ConditionStatus = Field(
        description="Whether the condition holds: True, False or Unknown.",
    )
    reason: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None,
        description="One CamelCase word saying why the condition has this status.",
    )
    message: Annotated[str, StringConstraints(max_length=32768)] | None = Field(
        default=None,
        description="Human-readable details about the last transition.",
    )
    last_transition_time: datetime | None = Field(
        default=None,
        description="When the status last changed (RFC 3339).",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the object when this condition was set.",
    )


def conditions_field(description: str) -> list[Condition]:
    """A `conditions` list field keyed by type, for the status models."""
    default: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        description=description,
        json_schema_extra=list_map("type"),
    )
    return default


def observed_generation_field() -> int | None:
    """The `observedGeneration` field of the status models, next to their conditions."""
    default: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the spec this status reflects.",
    )
    return default


def find(conditions: list[Condition], type_: str) -> Condition | None:
    """The condition of `type_`, or None; status readers (CLI, tests, core) call this."""
    return next((condition for condition in conditions if condition.type == type_), None)
