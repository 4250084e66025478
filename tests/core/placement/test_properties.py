"""Property tests: long random sequences of placements and releases keep every invariant."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubevisor.api import quantity
from kubevisor.core import hosts as hosts_status
from kubevisor.core import hypervisors
from kubevisor.core.placement import resize, scheduler
from kubevisor.core.placement.model import GroupPolicy, HostSnapshot, Request
from kubevisor.core.placement.scheduler import Decision
from kubevisor.core.placement.state import PlacementState, empty_usage

from .strategies import hosts, requests


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list, list[tuple[str, Request | int]]]:  # type: ignore[type-arg]
    cluster = [draw(hosts(f"h{i}")) for i in range(draw(st.integers(1, 4)))]
    ops: list[tuple[str, Request | int]] = []
    for i in range(draw(st.integers(5, 40))):
        if draw(st.integers(0, 3)) == 0:
            ops.append(("release", draw(st.integers(0, 10_000))))
        else:
            ops.append(("place", draw(requests(f"vm{i}"))))
    return cluster, ops


def check_allocated(state: PlacementState) -> None:
    """Each host's status.allocated (as the controller publishes it) is the sum of the
    claims on it, and its vmCount their number."""
    for host in state.hosts():
        claims = state.claims_on(host.name)
        _, allocated = hosts_status.resources(state.inventory(host.name), state.usage(host.name))
        assert allocated.cpu == sum(c.vcpus + c.pcpus for c in claims)
        memory, disk = sum(c.memory_mib for c in claims), sum(c.disk_mib for c in claims)
        assert allocated.memory == quantity.format_bytes(memory * quantity.MI)
        assert allocated.disk == quantity.format_bytes(disk * quantity.MI)
        assert state.usage(host.name).vms == len(claims)


def check_invariants(
    state: PlacementState, placed: dict[str, Request], outside: dict[tuple[str, int, int], int]
) -> None:
    for vm, claim in state.claims().items():
        host, request = state.host(claim.host), placed[vm]
        if request.hypervisor_types:
            assert host.hypervisor_type in request.hypervisor_types
        assert not hypervisors.missing(host.hypervisor_type, request.features)
    groups: dict[str, Counter[str]] = {}
    limits: dict[str, set[tuple[GroupPolicy, int]]] = {}
    for host in state.hosts():
        inv, usage = state.inventory(host.name), state.usage(host.name)
        claims = state.claims_on(host.name)
        assert usage.vcpus <= inv.vcpu.capacity
        assert usage.pcpus <= inv.pcpu.capacity
        assert usage.memory_mib <= inv.memory.capacity
        assert usage.disk_mib <= inv.disk.capacity
        pinned: list[int] = []
        for claim in claims:
            if claim.numa is not None:
                pinned.extend(claim.numa.pcpus)
                assert claim.numa.pcpus <= host.dedicated_cpus  # dedicated never from shared
                for cell in claim.numa.cells:
                    assert not cell.shared_cpus & host.dedicated_cpus  # shared never from dedicated
            if claim.group is not None:
                groups.setdefault(claim.group.name, Counter())[host.name] += 1
                rule = claim.group
                most = rule.max_per_host if rule.policy == GroupPolicy.ANTI_AFFINITY else 1
                limits.setdefault(rule.name, set()).add((rule.policy, most))
        assert len(pinned) == len(set(pinned)), "a pCPU is pinned twice"
        for cell, used in zip(host.numa_cells, usage.cells, strict=True):
            assert used.pinned <= cell.cpus & host.dedicated_cpus
            for size, count in used.hugepages:
                assert count <= cell.hugepage_total(size) - outside.get(
                    (host.name, cell.id, size), 0
                )
            assert used.shared_vcpus <= len(cell.cpus & host.shared_cpus) * inv.ratios.cpu
    for name, counts in groups.items():
        assert len(limits[name]) == 1, f"group {name}'s members hold different rules"
        ((policy, most),) = limits[name]
        if policy == GroupPolicy.ANTI_AFFINITY:
            assert max(counts.values()) <= most, f"anti-affinity {name} violated: {counts}"
        if policy == GroupPolicy.AFFINITY:
            assert len(counts) == 1, f"affinity {name} split: {counts}"
    check_allocated(state)
    recount = PlacementState.rebuild(list(state.hosts()), list(state.claims().values()))
    for host in state.hosts():
        assert recount.usage(host.name) == state.usage(host.name)


def pages_outside(cluster: list[HostSnapshot]) -> dict[tuple[str, int, int], int]:
    """Huge pages the agents report in use outside kubevisor, per host, cell and size."""
    return {
        (host.name, cell.id, pool.page_kib): pool.total - pool.free
        for host in cluster
        for cell in host.numa_cells
        for pool in cell.hugepages
    }


def reported(
    state: PlacementState, host: HostSnapshot, outside: dict[tuple[str, int, int], int]
) -> HostSnapshot:
    """`host` as its agent reports it once the guests of its claims run: the free huge pages
    are what the pages used outside kubevisor and by those guests leave."""
    usage = state.usage(host.name)
    cells = tuple(
        replace(
            cell,
            hugepages=tuple(
                replace(
                    pool,
                    free=pool.total
                    - outside[(host.name, cell.id, pool.page_kib)]
                    - used.hugepages_used(pool.page_kib),
                )
                for pool in cell.hugepages
            ),
        )
        for cell, used in zip(host.numa_cells, usage.cells, strict=True)
    )
    return replace(host, numa_cells=cells)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_claims_and_releases_keep_invariants(scenario: tuple) -> None:  # type: ignore[type-arg]
    cluster, ops = scenario
    state = PlacementState.rebuild(cluster, [])
    outside = pages_outside(cluster)
    placed: dict[str, Request] = {}
    for op, arg in ops:
        if op == "release":
            live = sorted(state.claims())
            if live:
                assert isinstance(arg, int)
                state.release(live[arg % len(live)])
        else:
            assert isinstance(arg, Request)
            decision = scheduler.place(state, arg)
            placed[arg.name] = arg
            if not isinstance(decision, Decision):
                assert decision.message.startswith(f"0/{len(cluster)} host")
        for host in cluster:
            state.add_host(reported(state, host, outside))
        check_invariants(state, placed, outside)
    for vm in sorted(state.claims()):
        state.release(vm)
    for host in cluster:
        assert state.usage(host.name) == empty_usage(host)
    assert not any(state.group_hosts(g) for g in ("g1", "g2", "g3"))


@st.composite
def lifecycles(draw: st.DrawFn) -> tuple[list, list[tuple[str, object]]]:  # type: ignore[type-arg]
    """Hosts and a random sequence of creates, resizes (of a VM already placed, to a random
    new size in the same group) and deletes."""
    cluster = [draw(hosts(f"h{i}")) for i in range(draw(st.integers(1, 3)))]
    ops: list[tuple[str, object]] = []
    for i in range(draw(st.integers(5, 40))):
        kind = draw(st.sampled_from(["create", "create", "resize", "resize", "delete"]))
        if kind == "create":
            ops.append(("create", draw(requests(f"vm{i}"))))
        elif kind == "resize":
            ops.append(("resize", (draw(st.integers(0, 10_000)), draw(requests(f"size{i}")))))
        else:
            ops.append(("delete", draw(st.integers(0, 10_000))))
    return cluster, ops


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lifecycles())
def test_random_creates_resizes_and_deletes_keep_allocated_equal_to_claims(
    scenario: tuple,  # type: ignore[type-arg]
) -> None:
    """A resize holds the new size or the old one, never both, never neither: host
    allocated stays the sum of its VMs' claims, within capacity, through any sequence."""
    cluster, ops = scenario
    state = PlacementState.rebuild(cluster, [])
    outside = pages_outside(cluster)
    placed: dict[str, Request] = {}
    for op, arg in ops:
        live = sorted(state.claims())
        if op == "create":
            assert isinstance(arg, Request)
            if isinstance(scheduler.place(state, arg), Decision):
                placed[arg.name] = arg
        elif op == "delete" and live:
            assert isinstance(arg, int)
            state.release(live[arg % len(live)])
        elif op == "resize" and live:
            assert isinstance(arg, tuple)
            index, size = arg
            vm = live[index % len(live)]
            before = state.claims()[vm]
            usage = state.usage(before.host)
            wanted = replace(size, name=vm, group=placed[vm].group)
            outcome = resize.resize(state, wanted, host=before.host)
            if isinstance(outcome, resize.Resized):
                assert outcome.previous == before
                assert state.claims()[vm] == outcome.claim
                assert outcome.claim.host == before.host
                placed[vm] = wanted
            else:
                assert state.claims()[vm] == before, "a refused resize keeps the old claim"
                assert state.usage(before.host) == usage
                assert outcome.message.startswith(f"resize to {resize.describe(wanted)}")
        for host in cluster:
            state.add_host(reported(state, host, outside))
        check_invariants(state, placed, outside)
