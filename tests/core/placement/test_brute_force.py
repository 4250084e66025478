"""A brute-force reference on small instances.

For each host: every filter except NUMA (simple predicates), then every assignment of
guest cells to distinct host cells (permutations) and, per cell, every combination of
free dedicated pCPUs, checked against the thread policy's definition. Whenever this
exhaustive search finds a feasible host, the engine must find one too, and the host
the engine picks must be feasible for the reference -- and must have the VM's shared
storage whenever a feasible host has it (that weigher outweighs all the others).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubevisor.core.placement import filters, numa, scheduler
from kubevisor.core.placement.model import (
    CellUsage,
    GuestCell,
    HostSnapshot,
    NumaCell,
    Request,
    ThreadPolicy,
)
from kubevisor.core.placement.scheduler import Decision
from kubevisor.core.placement.state import PlacementState

from .strategies import hosts, requests


def _core_of(cell: NumaCell) -> dict[int, frozenset[int]]:
    core = {cpu: frozenset({cpu}) for cpu in cell.cpus}
    for group in cell.siblings:
        for cpu in group:
            core[cpu] = group
    return core


def _pins_exist(
    host: HostSnapshot,
    cell: NumaCell,
    used: CellUsage,
    n: int,
    emulator: bool,
    policy: ThreadPolicy,
) -> bool:
    free = sorted((cell.cpus & host.dedicated_cpus) - used.pinned)
    core = _core_of(cell)
    units = n + (1 if emulator else 0)
    for chosen in itertools.combinations(free, units):
        vcpus, extra = chosen[:n], chosen[n:]
        if policy == ThreadPolicy.ISOLATE:
            cores = [core[c] for c in chosen]
            whole = all(c <= set(free) for c in cores)
            if whole and len(set(cores)) == len(cores):
                return True
        elif policy == ThreadPolicy.REQUIRE:
            if all(len(core[c] & set(free)) >= 2 for c in vcpus) and extra is not None:
                return True
        else:
            return True
    return False


def _cell_ok(
    host: HostSnapshot,
    cell: NumaCell,
    used: CellUsage,
    guest: GuestCell,
    request: Request,
    emulator: bool,
    ratios: tuple[float, float],
) -> bool:
    cpu_ratio, ram_ratio = ratios
    if request.hugepage_kib is not None:
        size = request.hugepage_kib
        pages = math.ceil(guest.memory_mib * 1024 / size)
        if pages > cell.hugepage_total(size) - used.hugepages_used(size):
            return False
        if pages > sum(pool.free for pool in cell.hugepages if pool.page_kib == size):
            return False  # what the agent reports in use is in use
    elif request.dedicated:
        if guest.memory_mib > cell.memory_mib - used.memory_mib:
            return False
    elif guest.memory_mib > cell.memory_mib or (
        used.memory_mib + guest.memory_mib > int(cell.memory_mib * ram_ratio)
    ):
        return False
    n = len(guest.vcpus)
    if request.dedicated:
        return _pins_exist(host, cell, used, n, emulator, request.thread_policy)
    shared = len(cell.cpus & host.shared_cpus)
    return n <= shared and used.shared_vcpus + n <= shared * cpu_ratio


def feasible(state: PlacementState, host: HostSnapshot, request: Request) -> bool:
    for check in filters.FILTERS:
        if check is not filters.numa and check(host, request, state) is not None:
            return False
    if not request.numa_aware:
        return True
    if request.dedicated and request.thread_policy == ThreadPolicy.REQUIRE and not host.has_smt:
        return False
    guests = numa.guest_cells(request)
    usage = state.usage(host.name).cells
    inv = state.inventory(host.name)
    ratios = (inv.ratios.cpu, inv.ratios.memory)
    emulator = request.dedicated and request.isolate_emulator_thread
    for perm in itertools.permutations(range(len(host.numa_cells)), len(guests)):
        if all(
            _cell_ok(host, host.numa_cells[h], usage[h], g, request, emulator and i == 0, ratios)
            for i, (g, h) in enumerate(zip(guests, perm, strict=True))
        ):
            return True
    return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_engine_finds_a_host_whenever_brute_force_does(data: st.DataObject) -> None:
    cluster = [data.draw(hosts(f"h{i}")) for i in range(data.draw(st.integers(1, 3)))]
    state = PlacementState.rebuild(cluster, [])
    for i in range(data.draw(st.integers(0, 8))):
        scheduler.place(state, data.draw(requests(f"pre{i}")))
    request = data.draw(requests("probe"))
    reference = [h.name for h in state.hosts() if feasible(state, h, request)]
    decision = scheduler.select_host(state, request)
    if reference:
        assert isinstance(decision, Decision), (reference, decision)
    if isinstance(decision, Decision):
        assert decision.host in reference
        sharing = [h for h in reference if state.host(h).shared_storage == request.shared_storage]
        if request.shared_storage is not None and sharing:
            assert decision.host in sharing, (sharing, decision)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_vm_lands_on_its_shared_storage_whenever_a_host_with_it_fits(
    data: st.DataObject,
) -> None:
    """However full, far in the ranking or few the hosts with the VM's disks are."""
    size = data.draw(st.integers(2, 12))
    sharing = data.draw(st.sets(st.integers(0, size - 1), min_size=1))
    cluster = [
        replace(data.draw(hosts(f"h{i:02}")), shared_storage="nfs" if i in sharing else None)
        for i in range(size)
    ]
    state = PlacementState.rebuild(cluster, [])
    for i in range(data.draw(st.integers(0, 12))):
        scheduler.place(state, data.draw(requests(f"pre{i}")))
    request = replace(data.draw(requests("probe")), shared_storage="nfs")
    window = data.draw(st.integers(1, 4))
    decision = scheduler.select_host(state, request, options=scheduler.Options(window=window))
    fits = [h.name for h in state.hosts() if feasible(state, h, request)]
    with_disks = [name for name in fits if state.host(name).shared_storage == "nfs"]
    if with_disks:
        assert isinstance(decision, Decision) and decision.host in with_disks, (
            with_disks,
            decision,
        )
