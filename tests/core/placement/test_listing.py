"""From listings to a placement state (placement.inputs.state_from, bound_claim, as_bound),
and the round trip a decision makes through VM status."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.virtualmachine import PlacementStatus, VirtualMachine
from kubevisor.core.placement import inputs, scheduler
from kubevisor.core.placement.capacity import AllocationRatios
from kubevisor.core.placement.model import HostSnapshot
from kubevisor.core.placement.scheduler import Decision
from kubevisor.core.placement.state import PlacementState

from .strategies import hosts

RATIOS = AllocationRatios()


def host(name: str, *, cpus: int = 4, memory: str = "8Gi") -> HostSnapshot:
    return inputs.host_snapshot(
        HypervisorHost.model_validate(
            {
                "metadata": {"name": name},
                "status": {
                    "capacity": {"cpu": cpus, "memory": memory, "disk": "100Gi"},
                    "numaCells": [{"id": 0, "cpus": list(range(cpus)), "memory": memory}],
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
        )
    )


def vm(name: str, *, host: str | None = None, placement: Any = None, **spec: Any) -> VirtualMachine:
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"memory": {"size": "1Gi"}, **spec},
    }
    if host is not None:
        obj["status"] = {"host": host, "placement": placement or {}}
    return VirtualMachine.model_validate(obj)


PINNED = {"cpu": {"vcpus": 2, "policy": "dedicated"}}
ON_0_1 = {"cells": [{"guestCell": 0, "hostCell": 0, "vcpuPins": [{"vcpu": 0, "pcpu": 0}]}]}


def test_state_from_holds_every_bound_vm_and_lists_the_others() -> None:
    listing = inputs.state_from(
        [host("h1"), host("h2")],
        [vm("a", host="h1"), vm("new"), vm("b", host="h2"), vm("elsewhere", host="h9")],
        ratios=RATIOS,
    )
    assert {k: c.host for k, c in listing.state.claims().items()} == {
        "ns/a": "h1",
        "ns/b": "h2",
    }
    assert [v.metadata["name"] for v in listing.unbound] == ["new", "elsewhere"]
    assert listing.conflicts == ()
    assert listing.state.usage("h1").memory_mib == 1024


def test_a_later_claim_on_pinned_cpus_already_held_is_a_conflict_with_its_reason() -> None:
    pinned = {**PINNED, "cpu": {"vcpus": 1, "policy": "dedicated"}}
    dedicated = HypervisorHost.model_validate(
        {
            "metadata": {"name": "h1"},
            "spec": {"cpuDedicatedSet": "0-3"},
            "status": {
                "capacity": {"cpu": 4, "memory": "8Gi"},
                "numaCells": [{"id": 0, "cpus": [0, 1, 2, 3], "memory": "8Gi"}],
            },
        }
    )
    listing = inputs.state_from(
        [inputs.host_snapshot(dedicated)],
        [
            vm("first", host="h1", placement=ON_0_1, **pinned),
            vm("second", host="h1", placement=ON_0_1, **pinned),
        ],
        ratios=RATIOS,
    )
    assert list(listing.state.claims()) == ["ns/first"]
    ((claim, reason),) = listing.conflicts
    assert claim.vm == "ns/second"
    assert reason == "ns/second pins pCPUs [0] already in use"


def test_a_status_naming_a_cell_the_host_lacks_is_a_conflict() -> None:
    on_cell_3 = {"cells": [{"guestCell": 0, "hostCell": 3}]}
    listing = inputs.state_from(
        [host("h1")], [vm("a", host="h1", placement=on_cell_3)], ratios=RATIOS
    )
    assert not listing.state.claims()
    ((claim, reason),) = listing.conflicts
    assert (claim.vm, reason) == ("ns/a", "ns/a uses NUMA cells [3] h1 lacks")


def test_bound_claim_is_none_for_a_vm_on_no_known_host() -> None:
    state = PlacementState()
    state.add_host(host("h1"))
    assert inputs.bound_claim(state, vm("a")) is None
    assert inputs.bound_claim(state, vm("a", host="h9")) is None
    claim = inputs.bound_claim(state, vm("a", host="h1"))
    assert claim is not None and (claim.vm, claim.host, claim.memory_mib) == ("ns/a", "h1", 1024)
    assert not state.claims(), "bound_claim only says what the VM holds; it claims nothing"


def test_as_bound_moves_only_host_and_placement() -> None:
    running = VirtualMachine.model_validate(
        {
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"memory": {"size": "1Gi"}},
            "status": {"host": "h1", "phase": "Running", "placement": {"emulatorPins": [1]}},
        }
    )
    target = PlacementStatus(emulator_pins=[5])
    moved = inputs.as_bound(running, "h2", target)
    assert moved.status is not None and running.status is not None
    assert (moved.status.host, moved.status.placement) == ("h2", target)
    assert moved.status.phase == "Running"
    assert running.status.host == "h1", "the VM it was made from is left alone"
    unplaced = inputs.as_bound(vm("b"), "h2", None)
    assert unplaced.status is not None
    assert (unplaced.status.host, unplaced.status.placement) == ("h2", PlacementStatus())


# -- the round trip through status -----------------------------------------------------------


@st.composite
def vms(draw: st.DrawFn, name: str) -> VirtualMachine:
    """A VirtualMachine asking for what `strategies.requests` asks, as the CRD says it."""
    vcpus = draw(st.integers(1, 6))
    memory = draw(st.sampled_from([512, 1024, 2048, 3072]))
    cpu: dict[str, Any] = {"vcpus": vcpus}
    if draw(st.booleans()):
        cpu["policy"] = "dedicated"
        cpu["threadPolicy"] = draw(st.sampled_from(["prefer", "isolate", "require"]))
        cpu["isolateEmulatorThread"] = draw(st.booleans())
    spec: dict[str, Any] = {"cpu": cpu, "memory": {"size": f"{memory}Mi"}}
    page = draw(st.sampled_from([None, None, "2Mi", "1Gi"]))
    split = draw(st.sampled_from([0, 1, 2])) if vcpus >= 2 else draw(st.sampled_from([0, 1]))
    halves = [memory // 2, memory - memory // 2] if split == 2 else [memory]
    assume(page != "1Gi" or all(part % 1024 == 0 for part in halves))
    if page is not None:
        spec["memory"]["hugepages"] = {"pageSize": page}
    if split == 2:
        half = vcpus // 2
        spec["numa"] = {
            "cells": [
                {"cpus": list(range(half)), "memory": f"{halves[0]}Mi"},
                {"cpus": list(range(half, vcpus)), "memory": f"{halves[1]}Mi"},
            ]
        }
    elif split == 1:
        spec["numa"] = {"cells": [{"cpus": list(range(vcpus)), "memory": f"{memory}Mi"}]}
    group = draw(st.sampled_from([None, "g1", "g2"]))
    if group is not None:
        spec["placement"] = {"group": group, "policy": "anti-affinity", "maxPerHost": 2}
    if draw(st.booleans()):
        spec["disks"] = [{"name": "root", "size": "1Gi"}]
    return VirtualMachine.model_validate(
        {"metadata": {"name": name, "namespace": "ns"}, "spec": spec}
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[HostSnapshot], list[VirtualMachine]]:
    cluster = [draw(hosts(f"h{i}")) for i in range(draw(st.integers(1, 3)))]
    return cluster, [draw(vms(f"vm{i}")) for i in range(draw(st.integers(1, 10)))]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_a_claim_survives_the_round_trip_through_status(
    scenario: tuple[list[HostSnapshot], list[VirtualMachine]],
) -> None:
    """Every decision, written to status as the controller writes it and read back as the
    controller reads it after a restart, is the claim placement made; and the state a
    listing of those statuses gives holds exactly what placement held."""
    cluster, wanted = scenario
    state = PlacementState.rebuild(cluster, [])
    bound: list[VirtualMachine] = []
    for candidate in wanted:
        decision = scheduler.place(state, inputs.request(candidate))
        if not isinstance(decision, Decision):
            continue
        placed = inputs.as_bound(candidate, decision.host, inputs.placement_status(decision.numa))
        assert inputs.claim(placed, state.host(decision.host)) == decision.claim
        bound.append(placed)
    listing = inputs.state_from(cluster, bound, ratios=RATIOS)
    assert listing.conflicts == ()
    assert listing.unbound == ()
    assert dict(listing.state.claims()) == dict(state.claims())
    for snapshot in cluster:
        assert listing.state.usage(snapshot.name) == state.usage(snapshot.name)
