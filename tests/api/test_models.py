"""The pydantic API models: example manifests round-trip through them unchanged, they
refuse the invalid manifests whose rules they mirror, and they read stored status."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from api.invalid_manifests import INVALID, MODELS_ALLOW, hvh, vm
from harness import REPO
from kubevisor.api import conditions, hypervisorhost, migrationjob, network, virtualmachine
from kubevisor.api.schema import ApiModel

EXAMPLES = REPO / "deploy" / "examples"

MODELS: dict[str, type[ApiModel]] = {
    "VirtualMachine": virtualmachine.VirtualMachine,
    "HypervisorHost": hypervisorhost.HypervisorHost,
    "MigrationJob": migrationjob.MigrationJob,
    "Network": network.Network,
}


def example_documents() -> list[Any]:
    return [
        pytest.param(document, id=f"{path.name}:{document['metadata']['name']}")
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def test_the_required_examples_exist() -> None:
    names = sorted(path.name for path in EXAMPLES.glob("*.yaml"))
    assert names == [
        "01-minimal-vm.yaml",
        "02-dedicated-numa-vm.yaml",
        "03-anti-affinity-group.yaml",
        "04-hugepages-vm.yaml",
        "05-hypervisorhost.yaml",
        "06-migrationjob.yaml",
        "07-network.yaml",
    ]


@pytest.mark.parametrize("document", example_documents())
def test_example_round_trips(document: dict[str, Any]) -> None:
    model = MODELS[document["kind"]].model_validate(document)
    # exclude_unset: a field the model dropped (a typo: unknown fields are ignored)
    # would make the dump differ from the file.
    assert model.model_dump(mode="json", by_alias=True, exclude_unset=True) == document


@pytest.mark.parametrize(
    ("manifest", "field"), [case for case in INVALID if case.id not in MODELS_ALLOW]
)
def test_models_refuse_what_they_mirror(manifest: dict[str, Any], field: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        MODELS[manifest["kind"]].model_validate(manifest)


def test_models_allow_only_the_listed_cases() -> None:
    # Keeps MODELS_ALLOW honest: every id in it names a case of the table.
    assert {case.id for case in INVALID} >= MODELS_ALLOW


def test_spec_defaults_match_the_schema_defaults() -> None:
    spec = virtualmachine.VirtualMachineSpec.model_validate({"memory": {"size": "64Mi"}})
    assert spec.to_wire() == {
        "runStrategy": "Always",
        "cpu": {"vcpus": 1, "policy": "shared", "features": [], "disabledFeatures": []},
        "memory": {"size": "64Mi"},
        "disks": [],
        "networks": [],
        "evictionStrategy": "LiveMigrate",
        "paused": False,
    }
    options = migrationjob.MigrationJobSpec.model_validate({"vm": "a"}).options
    assert (options.completion_timeout_per_gi_b, options.progress_timeout) == (150, 150)


def test_camel_case_aliases_and_python_names_both_populate() -> None:
    by_alias = migrationjob.MigrationOptions.model_validate(
        {"bandwidthMiBps": 10, "completionTimeoutPerGiB": 60}
    )
    by_name = migrationjob.MigrationOptions(bandwidth_mi_bps=10, completion_timeout_per_gi_b=60)
    assert by_alias == by_name
    assert by_name.to_wire()["bandwidthMiBps"] == 10
    status = hypervisorhost.HypervisorHostStatus.model_validate({"libvirtURI": "test:///default"})
    assert status.libvirt_uri == "test:///default"


def test_full_status_reads_back() -> None:
    wire = {
        "phase": "Running",
        "host": "host-a",
        "placement": {
            "cells": [
                {
                    "guestCell": 0,
                    "hostCell": 1,
                    "vcpuPins": [{"vcpu": 0, "pcpu": 6}],
                    "memory": "64Mi",
                    "hugepages": {"pageSize": "2Mi", "count": 32},
                }
            ],
            "emulatorPins": [7],
            "sharedCpus": [],
        },
        "domain": {"uuid": "0b7f4c2e-0000-4000-8000-000000000001", "state": "running"},
        "created": True,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Running",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
                "observedGeneration": 3,
            }
        ],
        "observedGeneration": 3,
        "restartCount": 0,
    }
    status = virtualmachine.VirtualMachineStatus.model_validate(wire)
    ready = conditions.find(status.conditions, conditions.READY)
    assert ready is not None and ready.status == "True"
    assert status.model_dump(mode="json", by_alias=True, exclude_unset=True) == wire


@pytest.mark.parametrize(
    "document",
    [pytest.param(path, id=path.name) for path in sorted(Path(EXAMPLES).glob("*.yaml"))],
)
def test_examples_are_small_enough_to_boot_as_tiny_guests(document: Path) -> None:
    for manifest in yaml.safe_load_all(document.read_text()):
        if manifest["kind"] != "VirtualMachine":
            continue
        spec = virtualmachine.VirtualMachineSpec.model_validate(manifest["spec"])
        assert spec.cpu.vcpus <= 2
        assert spec.boot is None, "the agent fills in its test kernel; examples leave boot empty"


@pytest.mark.parametrize(
    "manifest",
    [
        pytest.param(hvh({"allocationRatios": {"cpu": 1e308}}), id="ratio-1e308"),
        pytest.param(hvh({"allocationRatios": {"memory": float("inf")}}), id="ratio-inf"),
        pytest.param(hvh({"allocationRatios": {"disk": float("nan")}}), id="ratio-nan"),
        pytest.param(hvh({"cpuDedicatedSet": "0-4294967295"}), id="four-billion-cpus"),
        pytest.param(hvh({"cpuSharedSet": "7-2"}), id="backwards-range"),
        pytest.param(hvh({"reserved": {"memory": "1e999999999"}}), id="reserved-huge-exponent"),
        pytest.param(hvh({"reserved": {"memory": "1e999999999.0"}}), id="reserved-variant"),
        pytest.param(vm({"memory": {"size": "1e999999999.0"}}), id="vm-memory-variant"),
        pytest.param(
            vm({"disks": [{"name": "d", "size": "9" * 10_000 + "e99"}]}), id="vm-disk-long"
        ),
    ],
)
def test_a_stored_object_the_schema_now_refuses_fails_to_parse_at_once(
    manifest: dict[str, Any],
) -> None:
    # Objects stored before the schema refused these (or written around it): reading one
    # raises a ValidationError, which the controller reports as that object's failure,
    # never an OverflowError, a MemoryError or minutes of arithmetic.
    started = time.process_time()
    with pytest.raises(pydantic.ValidationError):
        MODELS[manifest["kind"]].model_validate({**manifest, "metadata": {"name": "x"}})
    assert time.process_time() - started < 0.1


@pytest.mark.parametrize(
    ("cpus", "accepted"),
    [
        pytest.param(8192, True, id="the-most-linux-numbers"),
        pytest.param(8193, False, id="more-than-linux-numbers"),
        pytest.param(10**12, False, id="absurd"),
    ],
)
def test_a_host_reports_at_most_8192_cpus(cpus: int, accepted: bool) -> None:
    # Placement expands a host without NUMA cells into a set of `capacity.cpu` CPUs: the
    # bound keeps a bad report from costing the controller seconds (issue 16, class 6).
    status = {"capacity": {"cpu": cpus}, "allocatable": {"cpu": cpus * 4}}
    if accepted:
        hypervisorhost.HypervisorHostStatus.model_validate(status)
    else:
        with pytest.raises(pydantic.ValidationError, match=r"capacity\.cpu"):
            hypervisorhost.HypervisorHostStatus.model_validate(status)
