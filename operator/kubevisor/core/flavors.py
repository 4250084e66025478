"""Which flavor a VM runs: the controller's decision of what to record in status.flavor.

A VM naming a flavor (spec.flavor) runs the flavor's spec as the controller recorded it
in the VM's status (`api.effective.spec` merges the two for every reader). `resolve`
decides that record from the VM and the flavor object as they are now:

- a VM whose domain runs keeps the revision it was started with: editing a flavor
  changes no running VM; it reaches each VM at its next start (a restart, a resize);
- any other VM (not placed yet, stopped, or naming another flavor than it runs) records
  the flavor as it is now: a changed size is then claimed like any other resize
  (`core.resizing`);
- a flavor that does not exist (FlavorNotFound), a field set both in the VM and in the
  flavor (FlavorConflict, naming the fields) or a combination that is no valid spec
  (FlavorInvalid, saying why) is refused: the VM's status says so, and nothing is
  overridden or guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from kubevisor.api import effective, objects
from kubevisor.api.virtualmachine import VirtualMachineSpec
from kubevisor.api.wire import CLUSTER_FLAVORS, FLAVORS

FLAVOR_NOT_FOUND: Final = "FlavorNotFound"
FLAVOR_CONFLICT: Final = "FlavorConflict"
FLAVOR_INVALID: Final = "FlavorInvalid"

RUNNING_PHASES: Final = frozenset({"Starting", "Running", "Paused", "Migrating", "Stopping"})
"""Phases in which a VM's domain runs the flavor it was started with."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a VM cannot run its flavor: a condition's reason and message."""

    reason: str
    message: str


FlavorKey = tuple[str, str]
"""(kind, name) of a cluster flavor, (kind, namespace/name) of a namespaced one."""


def key(vm: Mapping[str, Any]) -> FlavorKey | None:
    """The key of the flavor raw VM `vm` names (None: it names none)."""
    reference = (vm.get("spec") or {}).get("flavor")
    if not reference:
        return None
    kind = str(reference.get("kind") or CLUSTER_FLAVORS.kind)
    name = str(reference.get("name"))
    if kind == FLAVORS.kind:
        return kind, objects.key({**vm["metadata"], "name": name})
    return kind, name


def object_key(kind: str, flavor: Mapping[str, Any]) -> FlavorKey:
    """The key of raw flavor object `flavor` of `kind`."""
    meta = flavor["metadata"]
    return kind, objects.key(meta) if kind == FLAVORS.kind else str(meta["name"])


def record(kind: str, flavor: Mapping[str, Any]) -> dict[str, Any]:
    """The status.flavor of a VM running raw flavor object `flavor` of `kind` as it is."""
    spec = dict(flavor.get("spec") or {})
    return {
        "name": flavor["metadata"]["name"],
        "kind": kind,
        "revision": effective.revision(spec),
        "spec": spec,
    }


def same(one: Mapping[str, Any] | None, other: Mapping[str, Any] | None) -> bool:
    """Whether two status.flavor records name the same revision of the same flavor."""
    if one is None or other is None:
        return one is other
    return all(one.get(field) == other.get(field) for field in ("name", "kind", "revision"))


def running(status: Mapping[str, Any]) -> bool:
    """Whether a VM's domain runs (so it keeps the flavor revision it started with)."""
    return bool(status.get("created")) and status.get("phase") in RUNNING_PHASES


def resolve(
    vm: Mapping[str, Any], flavor: Mapping[str, Any] | None
) -> dict[str, Any] | Refusal | None:
    """What raw VM `vm`'s status.flavor should hold, given the raw flavor object it names
    as the controller sees it now (None: not found): a record, None when the VM names no
    flavor, or a Refusal."""
    found = key(vm)
    if found is None:
        return None
    kind, name = found[0], str(vm["spec"]["flavor"]["name"])
    status = vm.get("status") or {}
    recorded = status.get("flavor")
    if (
        recorded
        and (recorded.get("name"), recorded.get("kind")) == (name, kind)
        and running(status)
    ):
        wanted: dict[str, Any] = dict(recorded)
    elif flavor is None:
        where = f" in namespace {vm['metadata'].get('namespace')}" if kind == FLAVORS.kind else ""
        return Refusal(FLAVOR_NOT_FOUND, f"{kind} {name} not found{where}")
    else:
        wanted = record(kind, flavor)
    try:
        VirtualMachineSpec.model_validate(effective.merge(vm["spec"], wanted["spec"], name=name))
    except effective.FlavorConflict as conflict:
        return Refusal(FLAVOR_CONFLICT, str(conflict))
    except ValidationError as invalid:
        return Refusal(
            FLAVOR_INVALID,
            f"the VM and its flavor {name} together are no valid spec: "
            f"{objects.unreadable(invalid)}",
        )
    return wanted
