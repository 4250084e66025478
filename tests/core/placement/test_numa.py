"""NUMA fitting and CPU pinning, case by case (placement.numa.fit).

Default host: 2 cells x 4 cores x 2 threads, all CPUs dedicated, 32Gi per cell.
Cell 0 = CPUs 0-7 (siblings 0/1 2/3 4/5 6/7), cell 1 = CPUs 8-15.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from kubevisor.core.placement import numa
from kubevisor.core.placement.capacity import AllocationRatios
from kubevisor.core.placement.model import (
    CellUsage,
    HostSnapshot,
    NumaFit,
    Rejection,
    Request,
    ThreadPolicy,
)

from .builders import GIB, make_host, make_request

ISOLATE, REQUIRE = ThreadPolicy.ISOLATE, ThreadPolicy.REQUIRE
P2M, P1G = 2048, 1024 * 1024


@dataclass
class Case:
    request: Request
    host: HostSnapshot = field(default_factory=lambda: make_host(dedicated="all"))
    pinned: dict[int, set[int]] = field(default_factory=dict)
    memory: dict[int, int] = field(default_factory=dict)
    shared: dict[int, int] = field(default_factory=dict)
    pages: dict[int, tuple[int, int]] = field(default_factory=dict)
    ratios: AllocationRatios = field(default_factory=AllocationRatios)
    cells: dict[int, int] | None = None  # guest cell -> host cell
    pins: dict[int, int] | None = None  # vcpu -> pcpu
    emulator: set[int] | None = None
    blocked: set[int] | None = None
    reject: str | None = None

    def usages(self) -> tuple[CellUsage, ...]:
        return tuple(
            CellUsage(
                pinned=frozenset(self.pinned.get(i, set())),
                memory_mib=self.memory.get(i, 0),
                shared_vcpus=self.shared.get(i, 0),
                hugepages=(self.pages[i],) if i in self.pages else (),
            )
            for i in range(len(self.host.numa_cells))
        )


def ded(vcpus: int, **kw: Any) -> Request:
    return make_request(vcpus=vcpus, dedicated=True, **kw)


CASES = [
    pytest.param(
        Case(ded(4), cells={0: 0}, pins={0: 0, 1: 1, 2: 2, 3: 3}), id="prefer-fills-sibling-pairs"
    ),
    pytest.param(
        Case(ded(2), pinned={0: {0}, 1: {8, 9, 10, 11, 12}}, pins={0: 2, 1: 3}),
        id="prefer-uses-emptier-cores-first",
    ),
    pytest.param(
        Case(ded(3), pinned={0: {0, 2, 4, 6}, 1: set(range(8, 16))}, pins={0: 1, 1: 3, 2: 5}),
        id="prefer-falls-back-to-lone-threads",
    ),
    pytest.param(
        Case(ded(2, thread_policy=ISOLATE), pins={0: 0, 1: 2}, blocked={1, 3}),
        id="isolate-one-thread-per-core-siblings-blocked",
    ),
    pytest.param(
        Case(
            ded(1, thread_policy=ISOLATE),
            pinned={0: {0, 2, 4, 6}, 1: {8, 10, 12, 14}},
            reject="whole free cores",
        ),
        id="isolate-fails-without-a-whole-free-core",
    ),
    pytest.param(
        Case(
            ded(2, thread_policy=ISOLATE),
            host=make_host(threads=1, dedicated="all"),
            pins={0: 0, 1: 1},
            blocked=set(),
        ),
        id="isolate-on-host-without-smt-blocks-nothing",
    ),
    pytest.param(
        Case(ded(2, thread_policy=REQUIRE), pins={0: 0, 1: 1}), id="require-keeps-siblings-together"
    ),
    pytest.param(
        Case(
            ded(2, thread_policy=REQUIRE),
            host=make_host(threads=1, dedicated="all"),
            reject="no SMT",
        ),
        id="require-rejects-host-without-smt",
    ),
    pytest.param(
        Case(
            ded(2, thread_policy=REQUIRE),
            pinned={0: {0, 2, 4}, 1: set(range(8, 14))},
            pins={0: 6, 1: 7},
        ),
        id="require-skips-half-used-cores",
    ),
    pytest.param(
        Case(
            ded(4, thread_policy=REQUIRE),
            pinned={0: {0, 2, 4}, 1: set(range(8, 14))},
            reject="sibling threads",
        ),
        id="require-fails-when-only-lone-threads-remain",
    ),
    pytest.param(
        Case(ded(2, emulator=True), pins={0: 0, 1: 1}, emulator={2}),
        id="emulator-prefer-takes-next-thread",
    ),
    pytest.param(
        Case(
            ded(2, thread_policy=ISOLATE, emulator=True),
            pins={0: 0, 1: 2},
            emulator={4},
            blocked={1, 3, 5},
        ),
        id="emulator-isolate-takes-a-whole-core",
    ),
    pytest.param(
        Case(
            ded(4, emulator=True),
            pinned={0: {0, 1, 2, 3}, 1: {8, 9, 10, 11}},
            reject="dedicated CPUs",
        ),
        id="emulator-thread-needs-one-more-pcpu-in-the-cell",
    ),
    pytest.param(
        Case(
            ded(4, emulator=True, cells=(((0, 1), GIB), ((2, 3), GIB))),
            cells={0: 0, 1: 1},
            pins={0: 0, 1: 1, 2: 8, 3: 9},
            emulator={2},
        ),
        id="emulator-in-host-cell-of-guest-cell-0",
    ),
    pytest.param(
        Case(
            ded(4, cells=(((0, 1), GIB), ((2, 3), GIB))),
            cells={0: 0, 1: 1},
            pins={0: 0, 1: 1, 2: 8, 3: 9},
        ),
        id="two-guest-cells-on-distinct-host-cells",
    ),
    pytest.param(
        Case(ded(3, cells=(((0,), GIB), ((1,), GIB), ((2,), GIB))), reject="too few NUMA cells"),
        id="more-guest-cells-than-host-cells",
    ),
    pytest.param(
        Case(ded(10), reject="dedicated CPUs"), id="dedicated-cpus-do-not-fit-on-one-cell"
    ),
    pytest.param(
        Case(
            ded(10, cells=((tuple(range(5)), GIB), (tuple(range(5, 10)), GIB))), cells={0: 0, 1: 1}
        ),
        id="wide-guest-split-over-two-cells-fits",
    ),
    pytest.param(
        Case(
            ded(7, cells=(((0,), GIB), (tuple(range(1, 7)), GIB))),
            pinned={1: set(range(8, 13))},
            cells={0: 1, 1: 0},
        ),
        id="matching-moves-small-cell-aside-for-big-one",
    ),
    pytest.param(
        Case(ded(2, memory_mib=40 * GIB), reject="cell 0 has 32Gi in all, needs 40Gi"),
        id="dedicated-memory-per-cell-not-per-host",
    ),
    pytest.param(
        Case(
            ded(2, memory_mib=40 * GIB, cells=(((0,), 20 * GIB), ((1,), 20 * GIB))),
            cells={0: 0, 1: 1},
        ),
        id="memory-split-over-guest-cells-fits",
    ),
    pytest.param(
        Case(ded(2, memory_mib=4 * GIB), memory={0: 30 * GIB}, cells={0: 1}),
        id="partially-used-memory-cell-is-avoided",
    ),
    pytest.param(
        Case(
            ded(2, memory_mib=4 * GIB),
            memory={0: 30 * GIB, 1: 30 * GIB},
            reject="memory on any NUMA cell",
        ),
        id="dedicated-memory-never-overcommitted",
    ),
    pytest.param(
        Case(
            make_request(vcpus=8, cells=((tuple(range(8)), GIB),)),
            host=make_host(),
            shared={0: 28, 1: 28},
            reject="shared CPUs",
        ),
        id="shared-numa-guest-respects-per-cell-cpu-ratio",
    ),
    pytest.param(
        Case(
            make_request(vcpus=8, cells=((tuple(range(8)), GIB),)),
            host=make_host(),
            shared={0: 24, 1: 30},
            cells={0: 0},
        ),
        id="shared-numa-guest-fits-exactly-at-ratio",
    ),
    pytest.param(
        Case(
            make_request(vcpus=9, cells=((tuple(range(9)), GIB),)),
            host=make_host(),
            reject="shared CPUs",
        ),
        id="shared-guest-never-overcommits-a-cell-against-itself",
    ),
    pytest.param(
        Case(
            make_request(vcpus=2, memory_mib=8 * GIB, cells=(((0, 1), 8 * GIB),)),
            host=make_host(),
            memory={0: 40 * GIB, 1: 41 * GIB},
            ratios=AllocationRatios(memory=1.5),
            cells={0: 0},
        ),
        id="shared-numa-guest-memory-overcommit-per-cell",
    ),
    pytest.param(
        Case(
            ded(2, memory_mib=2 * GIB, hugepage_kib=P2M),
            host=make_host(dedicated="all", hugepages={P2M: 2048}),
        ),
        id="hugepages-2m-from-one-cell",
    ),
    pytest.param(
        Case(
            ded(2, memory_mib=6 * GIB, hugepage_kib=P2M),
            host=make_host(dedicated="all", hugepages={P2M: 2048}),
            reject="cell 0 has 2048 free 2Mi pages (4Gi), needs 3072 (6Gi)",
        ),
        id="hugepages-per-cell-not-summed-over-cells",
    ),
    pytest.param(
        Case(
            ded(2, memory_mib=6 * GIB, hugepage_kib=P2M, cells=(((0,), 3 * GIB), ((1,), 3 * GIB))),
            host=make_host(dedicated="all", hugepages={P2M: 2048}),
            cells={0: 0, 1: 1},
        ),
        id="hugepages-split-over-guest-cells",
    ),
    pytest.param(
        Case(
            ded(2, memory_mib=2 * GIB, hugepage_kib=P2M),
            host=make_host(dedicated="all", hugepages={P2M: 2048}),
            pages={0: (P2M, 1500)},
            pinned={1: {8}},
            cells={0: 1},
        ),
        id="hugepages-partially-used-cell-is-skipped",
    ),
    pytest.param(
        Case(
            ded(2, memory_mib=2 * GIB, hugepage_kib=P1G),
            host=make_host(dedicated="all", hugepages={P2M: 2048}),
            reject="cell 0 has 0 free 1Gi pages (0Mi), needs 2 (2Gi)",
        ),
        id="hugepages-size-not-offered",
    ),
    pytest.param(
        Case(
            ded(2, memory_mib=2 * GIB, hugepage_kib=P2M),
            host=make_host(dedicated="all", hugepages={P2M: 2048}, hugepages_free={P2M: 1000}),
            reject="cell 0 has 1000 free 2Mi pages (2000Mi), needs 1024 (2Gi)",
        ),
        id="hugepages-used-outside-kubevisor-count-as-used",
    ),
    pytest.param(
        Case(
            ded(2, memory_mib=2 * GIB, hugepage_kib=P2M),
            host=make_host(dedicated="all", hugepages={P2M: 2048}, hugepages_free={P2M: 1024}),
            pages={0: (P2M, 1024), 1: (P2M, 1024)},
        ),
        id="hugepages-of-running-claims-are-not-counted-twice",
    ),
    pytest.param(
        Case(
            ded(2, memory_mib=2 * GIB, hugepage_kib=P2M),
            host=make_host(dedicated="all", hugepages={P2M: 2048}),
            pages={0: (P2M, 1025), 1: (P2M, 1025)},
            reject="cell 0 has 1023 free 2Mi pages (2046Mi), needs 1024 (2Gi)",
        ),
        id="hugepages-of-claims-not-started-yet-count-as-used",
    ),
    pytest.param(
        Case(make_request(vcpus=2, hugepage_kib=P1G), host=make_host(hugepages={P1G: 4})),
        id="hugepages-1g-for-shared-guest",
    ),
    pytest.param(
        Case(ded(2), host=make_host(cells=0, dedicated="all"), reject="no NUMA topology"),
        id="host-without-numa-topology",
    ),
    pytest.param(
        Case(ded(4), host=make_host(dedicated="half"), pins={0: 0, 1: 1, 2: 2, 3: 3}),
        id="pins-only-from-dedicated-set",
    ),
    pytest.param(
        Case(ded(5), host=make_host(dedicated="half"), reject="dedicated CPUs"),
        id="shared-set-cpus-never-pinned",
    ),
    pytest.param(
        Case(
            ded(2, thread_policy=ISOLATE),
            host=make_host(dedicated=frozenset({0, 1, 2})),
            reject="whole free cores",
        ),
        id="isolate-needs-cores-wholly-in-dedicated-set",
    ),
    pytest.param(
        Case(
            ded(1, thread_policy=ISOLATE),
            host=make_host(dedicated=frozenset({0, 1, 2})),
            pins={0: 0},
            blocked={1},
        ),
        id="isolate-uses-the-one-whole-dedicated-core",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_fit(case: Case) -> None:
    usages = case.usages()
    before = (case.request, usages)
    result = numa.fit(host=case.host, usages=usages, request=case.request, ratios=case.ratios)
    assert (case.request, usages) == before
    if case.reject is not None:
        assert isinstance(result, Rejection), result
        assert case.reject in result.summary or case.reject in result.reason, result
        assert result.filter == "numa"
        return
    assert isinstance(result, NumaFit), result
    mapping = {c.guest_cell: c.host_cell for c in result.cells}
    assert len(set(mapping.values())) == len(mapping)
    if case.cells is not None:
        assert mapping == case.cells
    pins = {p.vcpu: p.pcpu for c in result.cells for p in c.pins}
    if case.request.dedicated:
        assert sorted(pins) == list(range(case.request.vcpus))
        assert len(set(pins.values())) == len(pins)
        assert result.pcpus <= case.host.dedicated_cpus
        for cell in result.cells:
            host_cell = next(h for h in case.host.numa_cells if h.id == cell.host_cell)
            assert cell.pinned <= host_cell.cpus
            assert not cell.pinned & usages[case.host.numa_cells.index(host_cell)].pinned
    if case.pins is not None:
        assert pins == case.pins
    if case.emulator is not None:
        assert result.emulator_pins == case.emulator
    if case.blocked is not None:
        assert set().union(*(c.blocked for c in result.cells)) == case.blocked
    if case.request.hugepage_kib:
        need = sum(c.memory_mib for c in numa.guest_cells(case.request)) * 1024
        assert sum(c.hugepages * (c.hugepage_kib or 0) for c in result.cells) == need


def test_wide_host_does_not_explode() -> None:
    """Nova bug 1978372: 8 guest cells on a 16-cell host took 6 minutes."""
    host = make_host(cells=16, cores=2, threads=2, dedicated="all")
    full = {i: set(range(i * 4, i * 4 + 4)) for i in range(0, 16, 2)}
    request = ded(8, cells=tuple(((i,), GIB) for i in range(8)), thread_policy=REQUIRE)
    case = Case(request, host=host, pinned=full)
    started = time.perf_counter()
    result = numa.fit(host=host, usages=case.usages(), request=request, ratios=AllocationRatios())
    assert time.perf_counter() - started < 1.0
    assert isinstance(result, NumaFit)
    assert {c.host_cell for c in result.cells} == set(range(1, 16, 2))
    request = ded(16, cells=tuple(((2 * i, 2 * i + 1), GIB) for i in range(8)))
    result = numa.fit(host=host, usages=case.usages(), request=request, ratios=AllocationRatios())
    assert isinstance(result, NumaFit)
    assert {c.host_cell for c in result.cells} == set(range(1, 16, 2))


def test_nine_guest_cells_on_eight_free_of_sixteen_fail_fast() -> None:
    host = make_host(cells=16, cores=2, threads=2, dedicated="all")
    full = {i: set(range(i * 4, i * 4 + 4)) for i in range(0, 16, 2)}
    request = ded(9, cells=tuple(((i,), GIB) for i in range(9)))
    case = Case(request, host=host, pinned=full)
    started = time.perf_counter()
    result = numa.fit(host=host, usages=case.usages(), request=request, ratios=AllocationRatios())
    assert time.perf_counter() - started < 1.0
    assert isinstance(result, Rejection)
