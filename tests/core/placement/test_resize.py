"""Resize in place (placement.resize) and the size a claim records (placement.inputs):
a new size is checked against the VM's own host before it is claimed; the claim of a bound
VM is rebuilt at the size its status records, not at a spec that has not run yet."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core import hosts as hosts_status
from kubevisor.core.placement import inputs, resize, scheduler
from kubevisor.core.placement.model import HostSnapshot, Request
from kubevisor.core.placement.scheduler import Decision
from kubevisor.core.placement.state import PlacementState

from .builders import GIB, make_host, make_request


def issue_host() -> HostSnapshot:
    """The issue's host: 8 CPUs, all shared, ratio 1 (8 allocatable vCPUs)."""
    host = make_host("h1", cells=1, cores=8, threads=1)
    return dataclasses.replace(host, ratios=dataclasses.replace(host.ratios, cpu=1.0))


def placed(host: HostSnapshot, *requests: Request) -> PlacementState:
    state = PlacementState.rebuild([host], [])
    for request in requests:
        assert isinstance(scheduler.place(state, request), Decision)
    return state


def allocated_cpu(state: PlacementState, host: str) -> int | None:
    _, allocated = hosts_status.resources(state.inventory(host), state.usage(host))
    return allocated.cpu


@pytest.mark.parametrize(
    ("host", "others", "new", "refusal"),
    [
        pytest.param(
            issue_host(),
            (make_request("ns/a", vcpus=2), make_request("ns/b", vcpus=1)),
            make_request("ns/minimal", vcpus=8, memory_mib=GIB),
            "host h1 has 5 vCPUs free of 8 (ratio 1), needs 8",
            id="issue-1-vcpu-to-8-beside-two-vms-on-an-8-vcpu-host",
        ),
        pytest.param(
            issue_host(),
            (),
            make_request("ns/minimal", vcpus=16, memory_mib=GIB),
            "host h1 has 8 CPUs, the VM asks 16 vCPUs",
            id="more-vcpus-than-the-host-has-cpus",
        ),
        pytest.param(
            make_host("h1", cells=1, cores=4, threads=1, cell_memory_mib=4 * GIB),
            (make_request("ns/a", vcpus=1, memory_mib=2 * GIB),),
            make_request("ns/minimal", vcpus=1, memory_mib=3 * GIB),
            "needs 3Gi",
            id="memory-beyond-what-is-free",
        ),
        pytest.param(
            make_host("h1", cells=1, cores=4, threads=1, dedicated="all"),
            (make_request("ns/a", vcpus=2, dedicated=True),),
            make_request("ns/minimal", vcpus=3, dedicated=True),
            "host h1 has 2 free dedicated CPUs, needs 3",
            id="dedicated-cpus-beyond-the-free-pcpus",
        ),
        pytest.param(
            make_host("h1", cells=1, cores=4, threads=1, hugepages={2048: 512}),
            (make_request("ns/a", vcpus=1, memory_mib=512, hugepage_kib=2048),),
            make_request("ns/minimal", vcpus=1, memory_mib=GIB, hugepage_kib=2048),
            "host h1 has 256 free 2Mi pages (512Mi), needs 512 (1Gi)",
            id="huge-pages-beyond-the-free-pages",
        ),
    ],
)
def test_a_size_that_does_not_fit_is_refused_with_figures_and_the_old_claim_kept(
    host: HostSnapshot, others: tuple[Request, ...], new: Request, refusal: str
) -> None:
    old = dataclasses.replace(new, vcpus=1, memory_mib=512)
    state = placed(host, *others, old)
    before, usage = state.claims()[new.name], state.usage("h1")

    outcome = resize.resize(state, new, host="h1")

    assert isinstance(outcome, resize.Refused), outcome
    assert refusal in outcome.message, outcome.message
    assert outcome.message.startswith(f"resize to {resize.describe(new)} refused on host h1: ")
    assert state.claims()[new.name] == before
    assert state.usage("h1") == usage


@pytest.mark.parametrize(
    ("host", "old", "new", "cpu_after"),
    [
        pytest.param(
            issue_host(),
            make_request("ns/minimal", vcpus=1, memory_mib=GIB),
            make_request("ns/minimal", vcpus=5, memory_mib=GIB),
            2 + 1 + 5,
            id="grows-into-what-is-free",
        ),
        pytest.param(
            issue_host(),
            make_request("ns/minimal", vcpus=4, memory_mib=GIB),
            make_request("ns/minimal", vcpus=1, memory_mib=GIB),
            2 + 1 + 1,
            id="shrinks",
        ),
        pytest.param(
            dataclasses.replace(issue_host(), schedulable=False, maintenance=True),
            make_request("ns/minimal", vcpus=1, memory_mib=GIB),
            make_request("ns/minimal", vcpus=2, memory_mib=GIB),
            2 + 1 + 2,
            id="a-cordoned-host-in-maintenance-still-resizes-the-vms-it-holds",
        ),
        pytest.param(
            make_host("h1", cells=1, cores=8, threads=1, dedicated="half"),
            make_request("ns/minimal", vcpus=1, memory_mib=GIB),
            make_request("ns/minimal", vcpus=3, memory_mib=GIB, dedicated=True),
            2 + 1 + 3,
            id="shared-to-dedicated-pins-pcpus",
        ),
    ],
)
def test_a_size_that_fits_replaces_the_claim(
    host: HostSnapshot, old: Request, new: Request, cpu_after: int
) -> None:
    others = (make_request("ns/a", vcpus=2, memory_mib=GIB), make_request("ns/b", vcpus=1))
    state = PlacementState.rebuild(
        [dataclasses.replace(host, schedulable=True, maintenance=False)], []
    )
    for request in (*others, old):
        assert isinstance(scheduler.place(state, request), Decision)
    state.add_host(host)
    before = state.claims()[old.name]

    outcome = resize.resize(state, new, host="h1")

    assert isinstance(outcome, resize.Resized), outcome
    assert outcome.previous == before
    assert state.claims()[new.name] == outcome.claim
    assert allocated_cpu(state, "h1") == cpu_after
    assert state.usage("h1").vms == 3
    if new.dedicated:
        assert outcome.claim.numa is not None and len(outcome.claim.numa.pcpus) == 3


def test_the_issue_scenario_leaves_allocated_true_for_the_next_placement() -> None:
    """The issue: after the refused resize allocated still says 4, and that is the truth,
    since the VM does not run at 8: a 4-vCPU VM fits beside it, then nothing more."""
    state = placed(
        issue_host(),
        make_request("ns/a", vcpus=2),
        make_request("ns/b", vcpus=1),
        make_request("ns/minimal", vcpus=1),
    )
    grown = resize.resize(state, make_request("ns/minimal", vcpus=8), host="h1")
    assert isinstance(grown, resize.Refused)
    assert allocated_cpu(state, "h1") == 4
    assert isinstance(scheduler.place(state, make_request("ns/c", vcpus=4)), Decision)
    assert not isinstance(scheduler.place(state, make_request("ns/d", vcpus=1)), Decision)


def test_describe_reads_as_the_spec_is_written() -> None:
    assert resize.describe(make_request(vcpus=8, memory_mib=GIB)) == "8 vCPUs, 1Gi memory"
    assert (
        resize.describe(
            make_request(vcpus=2, memory_mib=1536, dedicated=True, hugepage_kib=2048, disk_mib=GIB)
        )
        == "2 dedicated vCPUs, 1536Mi memory (2Mi huge pages), 1Gi disk"
    )


# -- the size a claim records ------------------------------------------------------------


def api_host(cpus: int = 8) -> HostSnapshot:
    return inputs.host_snapshot(
        HypervisorHost.model_validate(
            {
                "metadata": {"name": "h1"},
                "status": {
                    "capacity": {"cpu": cpus, "memory": "8Gi", "disk": "100Gi"},
                    "numaCells": [{"id": 0, "cpus": list(range(cpus)), "memory": "8Gi"}],
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
        )
    )


def vm(*, vcpus: int = 1, status: dict[str, Any] | None = None, **spec: Any) -> VirtualMachine:
    obj: dict[str, Any] = {
        "metadata": {"name": "minimal", "namespace": "ns"},
        "spec": {"cpu": {"vcpus": vcpus}, "memory": {"size": "1Gi"}} | spec,
    }
    if status is not None:
        obj["status"] = status
    return VirtualMachine.model_validate(obj)


def bound(spec_vcpus: int, claimed: VirtualMachine | None) -> VirtualMachine:
    """A VM bound to h1 with spec at `spec_vcpus`, its size claimed as `claimed` was."""
    size = inputs.claimed_size(claimed) if claimed is not None else None
    placement = inputs.placement_status(None, size=size)
    status = {"host": "h1", "placement": placement.to_wire() if placement else {}}
    return vm(vcpus=spec_vcpus, status=status)


@pytest.mark.parametrize(
    ("spec", "pending"),
    [
        pytest.param({"cpu": {"vcpus": 8}}, True, id="vcpus"),
        pytest.param({"memory": {"size": "2Gi"}}, True, id="memory"),
        pytest.param(
            {"memory": {"size": "1Gi", "hugepages": {"pageSize": "2Mi"}}}, True, id="huge-pages"
        ),
        pytest.param({"cpu": {"vcpus": 1, "policy": "dedicated"}}, True, id="dedicated-cpus"),
        pytest.param({"runStrategy": "Halted"}, False, id="run-strategy-is-no-resize"),
        pytest.param({"paused": True}, False, id="pause-is-no-resize"),
        pytest.param({}, False, id="unchanged"),
    ],
)
def test_a_resize_is_pending_when_a_sizing_part_of_the_spec_changed(
    spec: dict[str, Any], pending: bool
) -> None:
    placement = inputs.placement_status(None, size=inputs.claimed_size(vm()))
    assert placement is not None
    now = vm(status={"host": "h1", "placement": placement.to_wire()}, **spec)
    assert inputs.resize_pending(now) is pending


def test_a_vm_bound_before_sizes_were_recorded_is_no_pending_resize() -> None:
    assert not inputs.resize_pending(bound(8, None))
    assert inputs.claimed_request(bound(8, None)).vcpus == 8


def test_a_bound_vms_claim_is_rebuilt_at_its_claimed_size_not_at_a_spec_not_yet_applied() -> None:
    """A controller restart between the spec edit and the restart of the VM must not
    claim the new size: the old one is what runs."""
    patched = bound(8, claimed=vm(vcpus=1))
    assert inputs.resize_pending(patched)
    claim = inputs.claim(patched, api_host())
    assert claim is not None and claim.vcpus == 1 and claim.memory_mib == GIB
    listing = inputs.state_from(
        [api_host()], [patched], ratios=PlacementState().defaults, multipliers=None
    )
    assert listing.state.usage("h1").vcpus == 1


def test_claimed_size_records_what_the_request_asks() -> None:
    size = inputs.claimed_size(vm(vcpus=3, memory={"size": "1536Mi"}))
    assert (size.vcpus, size.cpu_policy, size.memory, size.disk) == (3, "shared", "1536Mi", None)
    assert size.fingerprint == inputs.size_fingerprint(vm(vcpus=3, memory={"size": "1536Mi"}).spec)
