"""Property: a VM from a flavor places exactly as the same VM with every field in its spec.

Random VM specs are split at random between the VM and a flavor (each sizing and tuning
field on one side); placement reads both VMs through the one model (`VirtualMachine`, which
merges the recorded flavor) and must ask for the same thing, claim the same size and land
on the same host with the same pins.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core import flavors
from kubevisor.core.placement import inputs, scheduler
from kubevisor.core.placement.state import PlacementState

from .strategies import hosts

CPU_GROUPS = (
    ("vcpus", "sockets", "cores"),
    ("policy", "threadPolicy", "isolateEmulatorThread", "tune"),
    ("model",),
    ("features", "disabledFeatures"),
)
"""cpu fields that move between VM and flavor together: each object's own rules (CEL
and the model) tie topology to vcpus and the dedicated-only options to policy."""


@st.composite
def flat_specs(draw: st.DrawFn) -> dict[str, Any]:
    vcpus = draw(st.integers(1, 6))
    dedicated = draw(st.booleans())
    cpu: dict[str, Any] = {"vcpus": vcpus, "policy": "dedicated" if dedicated else "shared"}
    if vcpus % 2 == 0 and draw(st.booleans()):
        cpu["sockets"], cpu["cores"] = 2, vcpus // 2
    if dedicated:
        cpu["threadPolicy"] = draw(st.sampled_from(["prefer", "isolate", "require"]))
        if draw(st.booleans()):
            cpu["isolateEmulatorThread"] = True
    elif draw(st.booleans()):
        cpu["tune"] = {"shares": 512}
    if draw(st.booleans()):
        cpu["model"] = "host-model"
    if draw(st.booleans()):
        cpu["features"] = ["vmx"]
    mib = draw(st.sampled_from([512, 1024, 2048, 3072]))
    memory: dict[str, Any] = {"size": f"{mib}Mi"}
    if draw(st.booleans()):
        memory["hugepages"] = {"pageSize": "2Mi"}
    spec: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if vcpus >= 2 and draw(st.booleans()):
        half = vcpus // 2
        spec["numa"] = {
            "cells": [
                {"cpus": list(range(half)), "memory": f"{mib // 2}Mi"},
                {"cpus": list(range(half, vcpus)), "memory": f"{mib - mib // 2}Mi"},
            ]
        }
    if draw(st.booleans()):
        spec["firmware"] = {"type": "uefi", "secureBoot": False}
    disk: dict[str, Any] = {"name": "root", "size": draw(st.sampled_from(["1Gi", "5Gi"]))}
    if draw(st.booleans()):
        disk["cache"] = "writeback"
    spec["disks"] = [disk]
    return spec


@st.composite
def splits(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(the flat spec, the VM's part, the flavor's part)."""
    flat = draw(flat_specs())
    declared, flavor = copy.deepcopy(flat), {}
    for group in CPU_GROUPS:
        moved = {name: declared["cpu"].pop(name) for name in group if name in declared["cpu"]}
        if moved and draw(st.booleans()):
            flavor.setdefault("cpu", {}).update(moved)
        else:
            declared["cpu"].update(moved)
    for section in ("memory", "numa", "firmware"):
        if section in declared and draw(st.booleans()):
            flavor[section] = declared.pop(section)
    disk = declared["disks"][0]
    if "cache" in disk and draw(st.booleans()):
        flavor["diskDefaults"] = {"cache": disk.pop("cache")}
    if not declared["cpu"]:
        del declared["cpu"]
    declared["flavor"] = {"name": "f"}
    return flat, declared, flavor


def _vm(spec: dict[str, Any], status: dict[str, Any]) -> VirtualMachine:
    return VirtualMachine.model_validate(
        {"metadata": {"name": "vm", "namespace": "n"}, "spec": spec, "status": status}
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(splits(), st.lists(hosts(), min_size=1, max_size=3))
def test_flavor_and_vm_place_as_the_flattened_spec(
    split: tuple[dict[str, Any], dict[str, Any], dict[str, Any]], cluster: list[Any]
) -> None:
    flat, declared, flavor = split
    cluster = [dataclasses.replace(h, name=f"h{i}") for i, h in enumerate(cluster)]
    record = flavors.record(
        "VirtualMachineClusterFlavor", {"metadata": {"name": "f"}, "spec": flavor}
    )
    plain = _vm(flat, {})
    flavored = _vm(declared, {"flavor": record})
    assert (
        flavors.resolve(
            {"metadata": {"name": "vm", "namespace": "n"}, "spec": declared},
            {"metadata": {"name": "f"}, "spec": flavor},
        )
        == record
    )
    assert inputs.size_fingerprint(flavored.spec) == inputs.size_fingerprint(plain.spec)
    assert inputs.request(flavored) == inputs.request(plain)
    assert inputs.claimed_size(flavored) == inputs.claimed_size(plain)
    outcomes = [
        scheduler.place(PlacementState.rebuild(cluster, []), inputs.request(vm))
        for vm in (plain, flavored)
    ]
    assert outcomes[0] == outcomes[1]
