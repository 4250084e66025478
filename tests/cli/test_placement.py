"""`kubevisor explain-placement` on the real API server: from the VM's status, and with
--what-if from the placement engine run locally on the listed hosts and VMs.

Two hosts labelled for this module: `big` (4Gi) holds a bound VM of 3Gi, `small` (2Gi)
is empty. Other tests' hosts may exist on the shared API server; VMs here select ours
with a host selector, and assertions only count what ours contribute.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.api.wire import HOST_SELECTOR_ANNOTATION
from kubevisor.cli import placement
from kubevisor.core.placement.capacity import AllocationRatios
from kubevisor.core.placement.scheduler import Decision

pytestmark = pytest.mark.apiserver

RUN = uuid.uuid4().hex[:6]
LABEL = {"cli-test": f"placement-{RUN}"}
BIG, SMALL = f"big-{RUN}", f"small-{RUN}"


def host_status(memory: str) -> dict[str, Any]:
    return {
        "hypervisor": {"type": "qemu"},
        "capacity": {"cpu": 8, "memory": memory, "disk": "100Gi"},
        "numaCells": [{"id": 0, "cpus": list(range(8)), "memory": memory}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "Heartbeat"}],
    }


@pytest.fixture(scope="module")
def hosts(control_plane: Any) -> Iterator[None]:
    for name, memory in ((BIG, "4Gi"), (SMALL, "2Gi")):
        manifest = {
            "apiVersion": "kubevisor.io/v1alpha1",
            "kind": "HypervisorHost",
            "metadata": {"name": name, "labels": LABEL},
        }
        control_plane.kubectl("create", "-f", "-", input=json.dumps(manifest))
        control_plane.kubectl(
            "patch",
            "hypervisorhost",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": host_status(memory)}),
        )
    yield
    for name in (BIG, SMALL):
        control_plane.kubectl("delete", "hypervisorhost", name, check=False)


@pytest.fixture(scope="module")
def bound(hosts: None, control_plane: Any, namespace: str) -> str:
    """A 3Gi VM bound to BIG, with NUMA placement and the Scheduled condition."""
    name = f"bound-{RUN}"
    manifest = {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"memory": {"size": "3Gi"}, "placement": {"hostSelector": LABEL}},
    }
    control_plane.kubectl("create", "-f", "-", input=json.dumps(manifest))
    status = {
        "phase": "Running",
        "host": BIG,
        "placement": {
            "cells": [{"guestCell": 0, "hostCell": 0, "memory": "3Gi"}],
            "sharedCpus": [0, 1, 2, 3, 4, 5, 6, 7],
        },
        "conditions": [
            {
                "type": "Scheduled",
                "status": "True",
                "reason": "Scheduled",
                "message": f"placed on host {BIG}",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
            }
        ],
    }
    control_plane.kubectl(
        "patch",
        "vm",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    return name


def test_bound_vm_says_where_and_why(cli: Any, objects: Any, bound: str) -> None:
    result = cli("explain-placement", bound, "-n", objects.namespace)
    assert (result.code, result.err) == (0, "")
    assert result.out.splitlines() == [
        f"{objects.namespace}/{bound} is on {BIG} (phase Running)",
        "  guest cell 0 -> host cell 0, memory 3Gi",
        "  vCPUs float over host CPUs 0-7",
        f"  Scheduled=True (Scheduled, since 2026-01-02T03:04:05+00:00): placed on host {BIG}",
    ]


@pytest.mark.parametrize(
    ("spec", "status", "first_line"),
    [
        pytest.param(
            {},
            {
                "phase": "Unschedulable",
                "conditions": [
                    {
                        "type": "Scheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/2 hosts fit: 2 insufficient memory",
                    }
                ],
            },
            "is on no host: 0/2 hosts fit: 2 insufficient memory",
            id="unschedulable-shows-the-engine-message",
        ),
        pytest.param(
            {"runStrategy": "Halted"},
            None,
            "is on no host: it is stopped (runStrategy Halted)",
            id="stopped",
        ),
        pytest.param({}, None, "is on no host yet (phase not reported)", id="not-placed-yet"),
    ],
)
def test_unbound_vm_says_why_not(
    cli: Any,
    objects: Any,
    name: str,
    spec: dict[str, Any],
    status: dict[str, Any] | None,
    first_line: str,
) -> None:
    objects.vm(name, spec=spec)
    if status is not None:
        objects.patch_status("vm", name, status)
    result = cli("explain-placement", name, "-n", objects.namespace)
    assert result.code == 1
    assert result.out.splitlines()[0] == f"{objects.namespace}/{name} {first_line}"


def what_if(cli: Any, objects: Any, name: str) -> tuple[int, list[str]]:
    result = cli("explain-placement", name, "-n", objects.namespace, "--what-if")
    assert result.err == ""
    lines = result.out.splitlines()
    return result.code, lines[lines.index(next(x for x in lines if x.startswith("what-if"))) :]


def per_filter(lines: list[str]) -> dict[str, int]:
    start = lines.index("  hosts turned down per filter (first failing filter only):")
    return {line.split()[0]: int(line.split()[1]) for line in lines[start + 1 :]}


def test_what_if_fits_nowhere_with_the_engine_message(
    cli: Any, objects: Any, name: str, hosts: None
) -> None:
    objects.vm(name, spec={"memory": {"size": "100Ti"}})
    code, lines = what_if(cli, objects, name)
    assert code == 1
    assert lines[0].startswith(f"what-if: {objects.namespace}/{name} fits nowhere: 0/")
    assert "more memory than the host has (need 100Ti, best has " in lines[0]
    assert per_filter(lines)["memory"] >= 2


def test_what_if_counts_the_claims_of_bound_vms(
    cli: Any, objects: Any, name: str, bound: str
) -> None:
    objects.vm(name, spec={"memory": {"size": "3Gi"}, "placement": {"hostSelector": LABEL}})
    code, lines = what_if(cli, objects, name)
    assert code == 1
    # BIG has 4Gi but holds the bound 3Gi VM; SMALL has 2Gi in all.
    assert "1 insufficient memory (need 3Gi, best has 1Gi free)" in lines[0]
    assert "1 more memory than the host has (need 3Gi, best has 2Gi in all)" in lines[0]
    assert per_filter(lines)["memory"] == 2


def test_what_if_places_a_vm_that_fits(cli: Any, objects: Any, name: str, bound: str) -> None:
    objects.vm(name, spec={"memory": {"size": "2Gi"}, "placement": {"hostSelector": LABEL}})
    code, lines = what_if(cli, objects, name)
    assert code == 0
    assert lines[0] == f"what-if: {objects.namespace}/{name} would be placed on {SMALL}"
    assert per_filter(lines)["memory"] == 1  # BIG: 1Gi left next to the bound VM


def test_what_if_leaves_out_the_vms_own_claim(cli: Any, objects: Any, bound: str) -> None:
    code, lines = what_if(cli, objects, bound)
    assert code == 0
    assert lines[0] == f"what-if: {objects.namespace}/{bound} would be placed on {BIG}"


def test_what_if_keeps_to_the_namespaces_host_pool(
    cli: Any, objects: Any, name: str, hosts: None
) -> None:
    objects.vm(name, spec={"memory": {"size": "1Gi"}, "placement": {"hostSelector": LABEL}})
    pool = f"{HOST_SELECTOR_ANNOTATION}=cli-test=nowhere-{RUN}"
    objects.plane.kubectl("annotate", "namespace", objects.namespace, pool)
    try:
        code, lines = what_if(cli, objects, name)
    finally:
        objects.plane.kubectl(
            "annotate", "namespace", objects.namespace, f"{HOST_SELECTOR_ANNOTATION}-"
        )
    assert code == 1
    outside = f"outside namespace {objects.namespace}'s host pool cli-test=nowhere-{RUN}"
    assert outside in lines[0]
    assert per_filter(lines)["namespace_pool"] >= 2  # BIG and SMALL, before their labels


def test_what_if_skips_a_claim_its_host_cannot_hold() -> None:
    host = HypervisorHost.model_validate(
        {"metadata": {"name": "h"}, "status": host_status("4Gi") | {"numaCells": []}}
    )
    other = VirtualMachine.model_validate(
        {
            "metadata": {"name": "other", "namespace": "ns"},
            "spec": {"memory": {"size": "1Gi"}},
            "status": {"host": "h", "placement": {"cells": [{"guestCell": 0, "hostCell": 3}]}},
        }
    )
    me = VirtualMachine.model_validate(
        {"metadata": {"name": "me", "namespace": "ns"}, "spec": {"memory": {"size": "1Gi"}}}
    )
    decision, _, conflicts = placement.what_if(me, [host], [other], ratios=AllocationRatios())
    assert isinstance(decision, Decision) and decision.host == "h"
    assert [c.vm for c in conflicts] == ["ns/other"]
