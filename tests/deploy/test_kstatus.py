"""kstatus (Flux, `kubectl wait`) reads kubevisor's objects as intended: Current once Ready
(a VM stopped or paused as asked included), InProgress while reconciling or before the
spec is observed, Failed when stalled.

Two sources: the Argo CD testdata (so both GitOps tools are checked on the same objects),
and a VirtualMachine on the real API server whose status comes from the agent's own status
function, kubevisor.core.status.bound_vm_status.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import REPO
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core import status as vm_status
from kubevisor.core.convergence import DomainObservation, DomainState
from kubevisor.testbed.controlplane import ControlPlane

from . import kstatus

TESTDATA = REPO / "deploy" / "argocd" / "resource_customizations" / "kubevisor.io"
CURRENT, IN_PROGRESS, FAILED = kstatus.CURRENT, kstatus.IN_PROGRESS, kstatus.FAILED


def case(path: str, expected: str) -> Any:
    return pytest.param(TESTDATA / path, expected, id=path.replace("/testdata/", "-"))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # kstatus reads an object without status as Current: write status early.
        case("VirtualMachine/testdata/no-status.yaml", CURRENT),
        case("VirtualMachine/testdata/unschedulable.yaml", IN_PROGRESS),
        case("VirtualMachine/testdata/starting.yaml", IN_PROGRESS),
        case("VirtualMachine/testdata/running.yaml", CURRENT),
        case("VirtualMachine/testdata/stopped-as-asked.yaml", CURRENT),
        case("VirtualMachine/testdata/paused-as-asked.yaml", CURRENT),
        case("VirtualMachine/testdata/crashed.yaml", FAILED),
        case("VirtualMachine/testdata/spec-not-observed.yaml", IN_PROGRESS),
        case("VirtualMachine/testdata/host-lost.yaml", IN_PROGRESS),
        case("HypervisorHost/testdata/unregistered.yaml", CURRENT),
        case("HypervisorHost/testdata/ready.yaml", CURRENT),
        case("HypervisorHost/testdata/cordoned.yaml", CURRENT),
        case("HypervisorHost/testdata/maintenance.yaml", CURRENT),
        case("HypervisorHost/testdata/heartbeat-lost.yaml", IN_PROGRESS),
        case("MigrationJob/testdata/no-status.yaml", CURRENT),
        case("MigrationJob/testdata/running.yaml", IN_PROGRESS),
        case("MigrationJob/testdata/succeeded.yaml", CURRENT),
        case("MigrationJob/testdata/failed.yaml", FAILED),
        case("MigrationJob/testdata/cancelled-as-asked.yaml", FAILED),
        case("VirtualMachineSnapshot/testdata/no-status.yaml", CURRENT),
        case("VirtualMachineSnapshot/testdata/in-progress.yaml", IN_PROGRESS),
        case("VirtualMachineSnapshot/testdata/ready.yaml", CURRENT),
        case("VirtualMachineSnapshot/testdata/failed.yaml", FAILED),
        case("MigrationJob/testdata/cancelled-by-kubevisor.yaml", FAILED),
    ],
)
def test_kstatus_of_the_argocd_testdata(path: Path, expected: str) -> None:
    assert kstatus.compute(yaml.safe_load(path.read_text())).status == expected


def test_terminating_wins_over_everything() -> None:
    obj = yaml.safe_load((TESTDATA / "VirtualMachine/testdata/running.yaml").read_text())
    obj["metadata"]["deletionTimestamp"] = "2025-11-26T14:05:00Z"
    assert kstatus.compute(obj).status == kstatus.TERMINATING


# -- on the real API server, status from the agent's status function -------------------------


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"kstatus-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "vm", "--all", "-n", name, check=False)
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def running(reason: str = "booted") -> DomainObservation:
    return DomainObservation(uuid=str(uuid.uuid4()), state=DomainState.RUNNING, reason=reason)


@pytest.mark.apiserver
@pytest.mark.parametrize(
    ("run_strategy", "domain", "bump_spec", "expected"),
    [
        pytest.param("Always", None, False, IN_PROGRESS, id="starting-is-in-progress"),
        pytest.param("Always", running(), False, CURRENT, id="running-is-current"),
        pytest.param("Halted", None, False, CURRENT, id="stopped-as-asked-is-current"),
        pytest.param("Always", running(), True, IN_PROGRESS, id="unobserved-spec-in-progress"),
        pytest.param(
            "Manual",
            DomainObservation(uuid="u", state=DomainState.CRASHED, reason="panicked"),
            False,
            FAILED,
            id="crashed-is-failed",
        ),
    ],
)
def test_kstatus_of_a_vm_on_the_api_server(
    control_plane: ControlPlane,
    namespace: str,
    run_strategy: str,
    domain: DomainObservation | None,
    bump_spec: bool,
    expected: str,
) -> None:
    plane, name = control_plane, f"vm-{uuid.uuid4().hex[:6]}"
    manifest = {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"runStrategy": run_strategy, "memory": {"size": "64Mi"}},
    }
    created = json.loads(
        plane.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(manifest)).stdout
    )
    vm = VirtualMachine.model_validate(created)
    inputs = vm_status.Inputs(
        spec=vm.spec,
        generation=created["metadata"]["generation"],
        deleting=False,
        domain=domain,
        hardware="",
    )
    status = vm_status.bound_vm_status(
        inputs, previous_phase=None, previous=[], restart_count=0, now=datetime.now(UTC)
    )
    patch = json.dumps({"status": status})
    plane.kubectl(
        "patch", "vm", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
    )
    if bump_spec:
        plane.kubectl(
            "patch",
            "vm",
            name,
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"spec":{"memory":{"size":"128Mi"}}}',
        )
    stored = json.loads(plane.kubectl("get", "vm", name, "-n", namespace, "-o", "json").stdout)
    assert kstatus.compute(stored).status == expected, stored.get("status")
