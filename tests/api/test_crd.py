"""The CRD generator (kubevisor.api.crd): committed YAML is current, schemas are structural
and documented, and `kubevisor crds generate --check` notices a stale file."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import REPO
from kubevisor.api import crd
from kubevisor.cli import crds as crds_cli

CRD_DIR = REPO / "deploy" / "crds"

# Keys a structural schema node may carry (what crd.py emits, nothing else).
ALLOWED_KEYS = set(crd._NODE_KEYS)


def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node under `node`, with a readable path."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def schemas() -> list[Any]:
    return [
        pytest.param(
            definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            id=definition["spec"]["names"]["kind"],
        )
        for definition in crd.definitions()
    ]


def test_committed_crds_match_the_models() -> None:
    committed = {path.name: path.read_text() for path in sorted(CRD_DIR.glob("*.yaml"))}
    assert committed == crd.rendered(), "deploy/crds is stale: run `kubevisor crds generate`"


def test_generation_is_deterministic() -> None:
    assert crd.rendered() == crd.rendered()


@pytest.mark.parametrize("root", schemas())
def test_every_field_has_a_description(root: dict[str, Any]) -> None:
    missing = [
        path
        for path, node in walk(root, "")
        # metadata may carry nothing but its type; explain documents ObjectMeta itself.
        if path != ".metadata"
        and not path.endswith(("[]", "{}"))  # list items and map values: see below
        and "description" not in node
    ]
    assert missing == []


@pytest.mark.parametrize("root", schemas())
def test_object_list_items_are_described(root: dict[str, Any]) -> None:
    missing = [
        path
        for path, node in walk(root, "")
        if path.endswith("[]") and node["type"] == "object" and "description" not in node
    ]
    assert missing == []


@pytest.mark.parametrize("root", schemas())
def test_schema_is_structural(root: dict[str, Any]) -> None:
    for path, node in walk(root, ""):
        assert "type" in node, f"{path} has no type"
        assert set(node) <= ALLOWED_KEYS, f"{path} has {set(node) - ALLOWED_KEYS}"
        assert not ({"$ref", "anyOf", "oneOf", "allOf", "nullable"} & set(node)), path
        assert not ("properties" in node and "additionalProperties" in node), path
        if "default" in node:
            assert node["default"] is not None, f"{path} defaults to null"
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


@pytest.mark.parametrize("root", schemas())
def test_cel_rules_carry_a_message(root: dict[str, Any]) -> None:
    for path, node in walk(root, ""):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"], f"{path}: {rule['rule']}"


# Fields left without an upper bound on purpose: counters (generations, restarts, bytes,
# pages, VMs), which int64 already bounds and for which any smaller limit would be
# arbitrary, and two texts written only by kubevisor's own processes that grow with the
# cluster or the VM (a drain's list of blocking VMs, a target's domain XML; etcd's object
# size limit bounds them). Every other string has a maxLength (or an enum), every number a
# maximum, every list a maxItems and every map a maxProperties: the API server's CEL cost
# estimate needs them, and no field can carry an unbounded value to the controller.
UNBOUNDED = {
    "VirtualMachine": {
        ".status.placement.cells[].hugepages.count",
        ".status.conditions[].observedGeneration",
        ".status.observedGeneration",
        ".status.restartCount",
        ".status.imagePulls[].receivedBytes",
        ".status.imagePulls[].totalBytes",
        ".status.imagePulls[].attempts",
    },
    "HypervisorHost": {
        ".status.allocatable.cpu",
        ".status.allocated.cpu",
        ".status.numaCells[].hugepages[].total",
        ".status.numaCells[].hugepages[].free",
        ".status.vmCount",
        ".status.drain.remaining",
        ".status.drain.migrating",
        ".status.drain.stopping",
        ".status.drain.blocked",
        ".status.drain.message",
        ".status.ksm.pagesShared",
        ".status.ksm.pagesSharing",
        ".status.images[].inUse",
        ".status.conditions[].observedGeneration",
        ".status.observedGeneration",
    },
    "MigrationJob": {
        ".status.targetPlacement.cells[].hugepages.count",
        ".status.targetAgent.domainXML",
        ".status.progress.dataTotal",
        ".status.progress.dataProcessed",
        ".status.progress.dataRemaining",
        ".status.progress.iteration",
        ".status.progress.bandwidthBps",
        ".status.conditions[].observedGeneration",
        ".status.observedGeneration",
    },
    "Network": {
        ".status.conditions[].observedGeneration",
        ".status.observedGeneration",
    },
    "VirtualMachineClusterFlavor": set(),
    "VirtualMachineFlavor": set(),
    "VirtualMachineSnapshot": {
        ".status.conditions[].observedGeneration",
        ".status.observedGeneration",
    },
    "VirtualMachineSnapshotSchedule": {
        ".status.conditions[].observedGeneration",
        ".status.observedGeneration",
    },
}


def _unbounded(node: dict[str, Any]) -> bool:
    if "enum" in node:
        return False
    kind = node["type"]
    if kind == "string":
        return "maxLength" not in node and node.get("format") != "date-time"
    if kind in ("integer", "number"):
        return "maximum" not in node
    if kind == "array":
        return "maxItems" not in node
    return isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node


@pytest.mark.parametrize("root", schemas())
def test_every_field_is_bounded_unless_listed(root: dict[str, Any]) -> None:
    kind = root["properties"]["kind"]["description"].removeprefix("Kind of this object: ")
    unbounded = {
        path
        for path, node in walk(root, "")
        # apiVersion and kind at the root are the API server's own to check.
        if path not in (".apiVersion", ".kind") and _unbounded(node)
    }
    assert unbounded == UNBOUNDED[kind.rstrip(".")]


def test_status_is_fully_declared() -> None:
    # kopf and our writers patch only declared fields; nothing may be kept blindly.
    for definition in crd.definitions():
        text = yaml.safe_dump(definition)
        assert "x-kubernetes-preserve-unknown-fields" not in text


@pytest.mark.parametrize(
    ("kind", "short_names", "scope", "columns"),
    [
        pytest.param(
            "VirtualMachine",
            ["vm", "vms"],
            "Namespaced",
            ["Phase", "Host", "vCPUs", "Memory", "Flavor", "Age"],
            id="virtualmachine",
        ),
        pytest.param(
            "HypervisorHost",
            ["hvh"],
            "Cluster",
            [
                "Ready",
                "Hypervisor",
                "CPU Allocated",
                "CPU Allocatable",
                "Memory Allocated",
                "Memory Allocatable",
                "VMs",
                "Age",
            ],
            id="hypervisorhost",
        ),
        pytest.param(
            "MigrationJob",
            ["vmmig"],
            "Namespaced",
            ["VM", "Source", "Target", "Phase", "Progress", "Age"],
            id="migrationjob",
        ),
        pytest.param(
            "Network",
            ["vnet"],
            "Namespaced",
            ["Type", "CIDR", "Used", "Free", "Age"],
            id="network",
        ),
        pytest.param(
            "VirtualMachineClusterFlavor",
            ["vmcf", "vmclusterflavor"],
            "Cluster",
            ["vCPUs", "Memory", "CPU Policy", "Age"],
            id="clusterflavor",
        ),
        pytest.param(
            "VirtualMachineFlavor",
            ["vmf", "vmflavor"],
            "Namespaced",
            ["vCPUs", "Memory", "CPU Policy", "Age"],
            id="flavor",
        ),
        pytest.param(
            "VirtualMachineSnapshot",
            ["vmsnap", "vmsnapshot"],
            "Namespaced",
            ["VM", "Phase", "Size", "Age"],
            id="snapshot",
        ),
        pytest.param(
            "VirtualMachineSnapshotSchedule",
            ["vmsnapsched"],
            "Namespaced",
            ["VM", "Schedule", "Keep", "Suspend", "Last", "Next", "Age"],
            id="snapshot-schedule",
        ),
    ],
)
def test_names_and_columns(
    kind: str, short_names: list[str], scope: str, columns: list[str]
) -> None:
    (definition,) = [d for d in crd.definitions() if d["spec"]["names"]["kind"] == kind]
    spec = definition["spec"]
    assert spec["group"] == "kubevisor.io"
    assert spec["names"]["shortNames"] == short_names
    assert spec["names"]["categories"] == ["kubevisor"]
    assert spec["scope"] == scope
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    # Flavors have no status: a VM records the flavor it runs in its own.
    has_status = "Flavor" not in kind
    assert version["subresources"] == ({"status": {}} if has_status else {})
    assert ("status" in version["schema"]["openAPIV3Schema"]["properties"]) == has_status
    default_columns = [
        c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c
    ]
    assert default_columns == columns


def _generate(directory: Path, *, check: bool) -> int:
    args = argparse.Namespace(dir=directory, check=check)
    code: int = crds_cli.run_generate(args)
    return code


def test_cli_writes_then_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _generate(tmp_path, check=True) == 1  # nothing there yet
    assert _generate(tmp_path, check=False) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(crd.rendered())
    assert _generate(tmp_path, check=True) == 0
    stale = tmp_path / "virtualmachines.kubevisor.io.yaml"
    stale.write_text(stale.read_text().replace("default: Always", "default: Halted"))
    capsys.readouterr()
    assert _generate(tmp_path, check=True) == 1
    out = capsys.readouterr().out
    assert "-                default: Halted" in out
    assert "+                default: Always" in out
