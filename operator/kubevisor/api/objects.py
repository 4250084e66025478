"""The identity of the objects kubevisor reads, raw (as the API server returns them) or
parsed (the pydantic models' `metadata`): the keys caches, the placement state and log
lines use, and the few fields read before an object is validated."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from kubevisor.api.migrationjob import Phase

MAX_REASON: Final = 1024
"""Characters of `unreadable`'s answer: a condition message, not a dump of the object."""


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


def unreadable(error: Exception) -> str:
    """Why an object cannot be read, in a line for a condition and a log: each of a
    ValidationError's first few errors as "spec.memory.size: <what is wrong>", or any
    other error's text. The controller calls it for hosts and VMs it refuses to act on."""
    if isinstance(error, ValidationError):
        problems = error.errors(include_url=False)
        said = [
            f"{'.'.join(str(part) for part in problem['loc'])}: "
            f"{str(problem['msg']).removeprefix('Value error, ')}"
            for problem in problems[:3]
        ]
        if len(problems) > 3:
            said.append(f"and {len(problems) - 3} more")
        text = "; ".join(said)
    else:
        text = str(error) or type(error).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def stale(candidate: Mapping[str, Any], cached: Mapping[str, Any] | None) -> bool:
    """Whether raw object `candidate` is older than `cached`, the same object as last
    seen: a watch event that lags behind the reply to a write made since. The
    resourceVersions are compared as numbers (the API server hands out etcd revisions);
    when either is not one, or the objects are different incarnations (uids), nothing is
    stale and the candidate wins."""
    if cached is None:
        return False
    meta, have = candidate.get("metadata") or {}, cached.get("metadata") or {}
    if meta.get("uid") != have.get("uid"):
        return False
    mine, theirs = str(meta.get("resourceVersion", "")), str(have.get("resourceVersion", ""))
    return mine.isdigit() and theirs.isdigit() and int(mine) < int(theirs)


def gone_since(cached: Mapping[str, Any], listed_at: str) -> bool:
    """Whether `cached`, missing from a listing taken at resourceVersion `listed_at`, was
    deleted (rather than created after the listing). Versions that are not numbers cannot
    be compared: the listing is the truth then."""
    mine = str((cached.get("metadata") or {}).get("resourceVersion", ""))
    if not (mine.isdigit() and listed_at.isdigit()):
        return True
    return int(mine) <= int(listed_at)
