"""Quota arithmetic (core/quota.py): what a VM counts, what a namespace holds, and who
is admitted — with migrations, resizes, deletions during placement and lowered quotas."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubevisor.core import quota
from kubevisor.core.placement import resize, scheduler
from kubevisor.core.placement.model import Claim, HostSnapshot, PciDevice, Request
from kubevisor.core.placement.scheduler import Decision
from kubevisor.core.placement.state import PlacementState
from kubevisor.core.quota import Exceeded, Ledger, Quota

from .placement.builders import GIB, make_host, make_request
from .placement.strategies import hosts, requests

VCPUS, MEMORY, VMS = quota.VCPUS, quota.MEMORY, quota.VMS


def placed(state: PlacementState, request: Request) -> Claim:
    decision = scheduler.place(state, request)
    assert isinstance(decision, Decision), decision
    return decision.claim


# -- what one VM counts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "host", "expected"),
    [
        pytest.param(
            make_request("a/vm", vcpus=2, memory_mib=4 * GIB, disk_mib=20 * GIB),
            make_host(),
            {VMS: 1, VCPUS: 2, MEMORY: 4 * GIB, quota.LOCAL_DISK: 20 * GIB},
            id="shared-vcpus-memory-and-disk",
        ),
        pytest.param(
            make_request("a/vm", vcpus=4, dedicated=True, emulator=True),
            make_host(dedicated="all"),
            {VMS: 1, VCPUS: 4, MEMORY: 2 * GIB, quota.DEDICATED_CPUS: 5},
            id="dedicated-vcpus-count-as-vcpus-and-pins-plus-the-emulator-thread",
        ),
        pytest.param(
            make_request("a/vm", vcpus=2, memory_mib=2 * GIB, hugepage_kib=2048),
            make_host(hugepages={2048: 2048}),
            {VMS: 1, VCPUS: 2, MEMORY: 2 * GIB, "kubevisor.io/hugepages-2Mi": 2 * GIB},
            id="hugepage-memory-counts-as-memory-and-as-pages-of-its-size",
        ),
        pytest.param(
            make_request("a/vm", vcpus=1, memory_mib=GIB, pci=(("gpu", 2),)),
            make_host(
                pci_devices=(
                    PciDevice("0000:01:00.0", "gpu", 0),
                    PciDevice("0000:02:00.0", "gpu", 1),
                )
            ),
            {VMS: 1, VCPUS: 1, MEMORY: GIB, "kubevisor.io/pci-gpu": 2},
            id="pci-devices-per-alias",
        ),
    ],
)
def test_a_vm_counts_what_its_claim_holds(
    request_: Request, host: HostSnapshot, expected: dict[str, int]
) -> None:
    state = PlacementState.rebuild([host], [])
    claim = placed(state, request_)
    assert quota.counted(claim) == expected
    assert quota.requested(request_) == expected, "checked before placement as counted after"


@settings(max_examples=150, deadline=None)
@given(host=hosts(), request_=requests(name="ns/vm"))
def test_what_a_request_asks_is_what_its_claim_counts_wherever_it_lands(
    host: HostSnapshot, request_: Request
) -> None:
    state = PlacementState.rebuild([host], [])
    decision = scheduler.place(state, request_)
    if isinstance(decision, Decision):
        assert quota.counted(decision.claim) == quota.requested(request_)


# -- reading limits and admitting ------------------------------------------------------------


def test_hard_limits_read_kubevisor_names_in_placement_units_and_leave_the_rest() -> None:
    limits, problems = quota.hard_limits(
        {
            "kubevisor.io/vcpus": "8",
            "kubevisor.io/memory": "16Gi",
            "kubevisor.io/hugepages-1Gi": "4Gi",
            "kubevisor.io/local-disk": "1500Mi",
            "kubevisor.io/pci-gpu": "2",
            "kubevisor.io/vms": "10",
            "kubevisor.io/cores": "4",
            "kubevisor.io/dedicated-cpus": "lots",
            "pods": "3",
            "requests.cpu": "2",
        }
    )
    assert limits == {
        VCPUS: 8,
        MEMORY: 16 * GIB,
        "kubevisor.io/hugepages-1Gi": 4 * GIB,
        quota.LOCAL_DISK: 1500,
        "kubevisor.io/pci-gpu": 2,
        VMS: 10,
    }
    assert problems[0] == "kubevisor.io/cores is not a resource kubevisor counts"
    assert problems[1].startswith("kubevisor.io/dedicated-cpus: 'lots' ")
    assert len(problems) == 2


def test_a_byte_limit_that_is_not_whole_mib_is_read_down() -> None:
    limits, _ = quota.hard_limits({"kubevisor.io/memory": "1500000000"})
    assert limits == {MEMORY: 1430}, "1500000000 bytes is 1430.5 MiB: never more than it says"


QUOTAS = (Quota("compute", {VCPUS: 2, MEMORY: 4 * GIB}), Quota("count", {VMS: 3}))


@pytest.mark.parametrize(
    ("used", "wanted", "exceeded"),
    [
        pytest.param({}, {VMS: 1, VCPUS: 2, MEMORY: GIB}, None, id="fits-exactly"),
        pytest.param(
            {VMS: 2, VCPUS: 2, MEMORY: 2 * GIB},
            {VMS: 1, VCPUS: 1, MEMORY: GIB},
            Exceeded("compute", VCPUS, 1, 2, 2),
            id="the-third-1-vcpu-vm-of-a-2-vcpu-quota",
        ),
        pytest.param(
            {VMS: 1, VCPUS: 1, MEMORY: 3 * GIB},
            {VMS: 1, VCPUS: 1, MEMORY: 2 * GIB},
            Exceeded("compute", MEMORY, 2 * GIB, 3 * GIB, 4 * GIB),
            id="memory",
        ),
        pytest.param(
            {VMS: 3, VCPUS: 0, MEMORY: 0},
            {VMS: 1, VCPUS: 1, MEMORY: GIB},
            Exceeded("count", VMS, 1, 3, 3),
            id="vm-count-in-a-second-quota",
        ),
        pytest.param(
            {VMS: 1, VCPUS: 5, MEMORY: GIB},
            {VMS: 1, quota.LOCAL_DISK: 10},
            None,
            id="over-a-lowered-limit-a-vm-not-asking-for-it-still-fits",
        ),
    ],
)
def test_admit_names_the_first_limit_a_vm_would_go_over(
    used: dict[str, int], wanted: dict[str, int], exceeded: Exceeded | None
) -> None:
    assert quota.admit(QUOTAS, used=used, wanted=wanted) == exceeded


def test_the_message_gives_resource_requested_used_and_hard_as_users_write_them() -> None:
    assert Exceeded("compute", VCPUS, 1, 2, 2).message == (
        "exceeds quota compute: kubevisor.io/vcpus requested 1, used 2, hard 2"
    )
    assert Exceeded("compute", MEMORY, 1536, 3 * GIB, 4 * GIB).message == (
        "exceeds quota compute: kubevisor.io/memory requested 1536Mi, used 3Gi, hard 4Gi"
    )


def test_status_used_lists_every_limited_resource_in_wire_units() -> None:
    compute = Quota("compute", {VCPUS: 2, MEMORY: 4 * GIB, "kubevisor.io/pci-gpu": 1})
    assert quota.status_used(compute, {VCPUS: 1, MEMORY: 1536, VMS: 1}) == {
        VCPUS: "1",
        MEMORY: "1536Mi",
        "kubevisor.io/pci-gpu": "0",
    }


# -- what a namespace holds: the ledger over the placement state ------------------------------


def following(state: PlacementState) -> Ledger:
    ledger = Ledger()
    ledger.follow(state)
    return ledger


def test_a_namespace_holds_the_claims_of_its_own_vms_only() -> None:
    state = PlacementState.rebuild([make_host()], [])
    placed(state, make_request("a/one", vcpus=1, memory_mib=GIB))
    ledger = following(state)  # from what the state holds, then from every change
    placed(state, make_request("a/two", vcpus=2, memory_mib=GIB))
    placed(state, make_request("b/one", vcpus=4, memory_mib=GIB))
    assert ledger.used("a") == {VMS: 2, VCPUS: 3, MEMORY: 2 * GIB}
    assert ledger.used("a", besides="a/two") == {VMS: 1, VCPUS: 1, MEMORY: GIB}
    assert ledger.used("a", besides="b/one") == ledger.used("a"), "another namespace's VM"
    assert ledger.used("b")[VCPUS] == 4
    assert ledger.used("c") == {}


def test_a_ledger_given_a_new_state_forgets_the_old_one() -> None:
    old = PlacementState.rebuild([make_host()], [])
    ledger = following(old)
    placed(old, make_request("a/one", vcpus=1, memory_mib=GIB))
    new = PlacementState.rebuild([make_host()], [])
    ledger.follow(new)
    placed(old, make_request("a/two", vcpus=1, memory_mib=GIB))
    assert ledger.used("a") == {}


def test_a_vm_deleted_during_placement_gives_its_quota_back_at_once() -> None:
    """Placed (claimed under the lock) and deleted before its bind landed: the claim is
    released and the ledger reads what the state holds, with no step in between."""
    state = PlacementState.rebuild([make_host()], [])
    ledger = following(state)
    placed(state, make_request("a/gone", vcpus=2, memory_mib=GIB))
    state.release("a/gone")
    assert ledger.used("a") == {}


def test_a_live_migration_counts_once_and_asks_nothing_of_the_quota() -> None:
    state = PlacementState.rebuild([make_host("h1"), make_host("h2")], [])
    ledger = following(state)
    claim = placed(state, make_request("a/vm", vcpus=2, memory_mib=GIB))
    before = ledger.used("a")
    target = "h2" if claim.host == "h1" else "h1"
    # The migration's claim on its target is held under the job's key, not the VM's.
    state.claim(dataclasses.replace(claim, vm="migration:a/job", host=target))
    assert ledger.used("a") == before
    # Completed: the VM's own claim moves to the target.
    moved = state.release("migration:a/job")
    state.release("a/vm")
    assert moved is not None
    state.claim(dataclasses.replace(moved, vm="a/vm"))
    assert ledger.used("a") == before


def test_a_resize_counts_the_new_size() -> None:
    state = PlacementState.rebuild([make_host()], [])
    ledger = following(state)
    placed(state, make_request("a/vm", vcpus=1, memory_mib=GIB))
    outcome = resize.resize(state, make_request("a/vm", vcpus=4, memory_mib=2 * GIB), host="h1")
    assert isinstance(outcome, resize.Resized)
    assert ledger.used("a") == {VMS: 1, VCPUS: 4, MEMORY: 2 * GIB}


# -- the property: admission never takes a namespace over a limit -------------------------------

NAMESPACES = ("a", "b")


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[str, str, int]]:
    """(action, namespace, number): place a VM of `number` vCPUs, delete the namespace's
    `number`-th VM, or set its vCPU limit to `number`."""
    action = st.sampled_from(["place", "place", "place", "delete", "limit"])
    return draw(
        st.lists(
            st.tuples(action, st.sampled_from(NAMESPACES), st.integers(0, 4)),
            min_size=1,
            max_size=40,
        )
    )


@settings(max_examples=200, deadline=None)
@given(steps())
def test_admission_never_adds_past_a_limit_and_lowering_one_stops_nothing(
    plan: list[tuple[str, str, int]],
) -> None:
    state = PlacementState.rebuild([make_host(cells=1, cores=16, threads=1)], [])
    ledger = following(state)
    limits = {namespace: Quota("compute", {VCPUS: 4, VMS: 3}) for namespace in NAMESPACES}
    names = iter(range(10_000))
    for action, namespace, number in plan:
        before = ledger.used(namespace)
        if action == "limit":
            limits[namespace] = Quota("compute", {VCPUS: number, VMS: 3})
            assert ledger.used(namespace) == before, "a lower limit stops none"
            continue
        if action == "delete":
            mine = sorted(vm for vm in state.claims() if quota.namespace_of(vm) == namespace)
            if mine:
                gone = mine[number % len(mine)]
                state.release(gone)
            continue
        request = make_request(f"{namespace}/vm{next(names)}", vcpus=max(number, 1))
        wanted = quota.requested(request)
        refused = quota.admit([limits[namespace]], used=before, wanted=wanted)
        if refused is None:
            placed(state, request)
        after = ledger.used(namespace)
        recount = quota.total(
            quota.counted(c) for c in state.claims().values() if c.vm.startswith(f"{namespace}/")
        )
        assert after == recount, "the ledger agrees with a recount of the claims"
        for resource, hard in limits[namespace].hard.items():
            grew = after.get(resource, 0) > before.get(resource, 0)
            assert not grew or after[resource] <= hard, (resource, before, after, hard)
        if refused is not None:
            assert after == before
            assert refused.used + refused.requested > refused.hard
