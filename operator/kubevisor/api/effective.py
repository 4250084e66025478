"""The effective spec of a VM that names a flavor: the one place the two are merged.

A flavor (VirtualMachineClusterFlavor, VirtualMachineFlavor) holds part of a VM spec's
sizing and tuning; a VM naming it gets those fields. A field both set is refused, never
silently taken from one of them: `merge` names every such field. `VirtualMachine` (the
model every reader parses a VM with: placement, drains, failover, the agent's domain
build) calls `spec` before it validates, so a reader cannot see the VM's own fields
without its flavor's. It reads the flavor as the controller recorded it in status.flavor
(`core.flavors` decides when to record it), so editing a flavor changes no VM until the
VM is next started.

Pure functions on the wire form (camelCase dicts), below the models: the API layer may
import nothing above it, and the CRD's stored objects are what both sides read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

KEYED: Final = ("cpu", "memory")
"""Sections merged field by field: a flavor may give cpu.policy and the VM cpu.vcpus."""
WHOLE: Final = ("numa", "devices", "firmware")
"""Sections taken whole from one side: their fields only make sense together."""
DISK_DEFAULTS: Final = "diskDefaults"
"""The flavor's settings for every disk; a disk setting one of them itself conflicts."""
FIELDS: Final = (*KEYED, *WHOLE, DISK_DEFAULTS)
"""Every field of a flavor's spec."""


class FlavorConflict(ValueError):
    """Fields set both in a VM and in its flavor, by path (e.g. cpu.vcpus)."""

    def __init__(self, flavor: str, fields: list[str]) -> None:
        self.flavor = flavor
        self.fields = fields
        super().__init__(
            f"set both in the VM and in its flavor {flavor}: {', '.join(fields)} "
            "(remove them from one of the two)"
        )


class FlavorUnresolved(ValueError):
    """A VM names a flavor the controller has not recorded in its status yet."""


def conflicts(declared: Mapping[str, Any], flavor: Mapping[str, Any]) -> list[str]:
    """The fields both the VM spec `declared` and the flavor spec `flavor` set, as paths
    (cpu.vcpus, numa, disks[root].cache), in a fixed order."""
    found: list[str] = []
    for section in KEYED:
        mine, theirs = declared.get(section) or {}, flavor.get(section) or {}
        found += [f"{section}.{name}" for name in theirs if name in mine]
    found += [section for section in WHOLE if section in declared and section in flavor]
    defaults = flavor.get(DISK_DEFAULTS) or {}
    for disk in declared.get("disks") or []:
        found += [f"disks[{disk.get('name')}].{name}" for name in defaults if name in disk]
    return found


def merge(declared: Mapping[str, Any], flavor: Mapping[str, Any], *, name: str) -> dict[str, Any]:
    """The effective spec: `declared` (a VM's spec as stored) with the fields of `flavor`
    (the spec of the flavor `name`) it does not set. Raises FlavorConflict naming every
    field set in both. Neither input is changed."""
    found = conflicts(declared, flavor)
    if found:
        raise FlavorConflict(name, found)
    spec = dict(declared)
    for section in KEYED:
        if section in flavor:
            spec[section] = {**flavor[section], **(declared.get(section) or {})}
    for section in WHOLE:
        if section in flavor:
            spec[section] = flavor[section]
    defaults = flavor.get(DISK_DEFAULTS) or {}
    if defaults and "disks" in declared:
        spec["disks"] = [{**defaults, **disk} for disk in declared["disks"]]
    return spec


def spec(declared: Mapping[str, Any], status: Mapping[str, Any] | None) -> dict[str, Any]:
    """The effective spec of a VM from its stored spec and status: merged with the flavor
    recorded in status.flavor when spec.flavor names one, else the spec itself. Raises
    FlavorUnresolved when no flavor is recorded yet, FlavorConflict as `merge`."""
    reference = declared.get("flavor")
    if not reference:
        return dict(declared)
    recorded = (status or {}).get("flavor")
    if not recorded:
        raise FlavorUnresolved(
            f"flavor: {reference.get('name')} is not resolved yet (the controller records "
            "it in status.flavor)"
        )
    return merge(declared, recorded.get("spec") or {}, name=str(recorded.get("name")))


def revision(flavor: Mapping[str, Any]) -> str:
    """A flavor spec's revision: 16 hex digits of the SHA-256 of its canonical JSON, the
    same for the same fields whatever their order."""
    text = json.dumps(flavor, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
