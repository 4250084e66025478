"""The identity of the objects kubevisor reads, raw (as the API server returns them) or
parsed (the pydantic models' `metadata`): the keys caches, the placement state and log
lines use, and the few fields read before an object is validated."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubevisor.api.migrationjob import Phase


def key(metadata: Mapping[str, Any]) -> str:
    """`namespace/name` of a namespaced object ("default" when it names no namespace)."""
    return f"{metadata.get('namespace') or 'default'}/{metadata.get('name', '')}"


def job_vm_key(job: Mapping[str, Any]) -> str:
    """The key of the VirtualMachine a raw MigrationJob moves (it is in the job's namespace)."""
    return key({**job["metadata"], "name": (job.get("spec") or {}).get("vm")})


def job_phase(job: Mapping[str, Any]) -> Phase | None:
    """A raw MigrationJob's phase (None before the controller first wrote its status)."""
    phase: Phase | None = (job.get("status") or {}).get("phase")
    return phase
