"""Weighers (placement.weighers): normalised 0..1, multiplied, sign picks spread or pack."""

from __future__ import annotations

import pytest

from kubevisor.core.placement import weighers
from kubevisor.core.placement.model import Claim, GroupPolicy, ServerGroup
from kubevisor.core.placement.state import PlacementState
from kubevisor.core.placement.weighers import Candidate, Multipliers

from .builders import GIB, make_host, make_request


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param([], [], id="empty"),
        pytest.param([5.0, 5.0], [0.0, 0.0], id="all-equal-gives-zero"),
        pytest.param([0.0, 5.0, 10.0], [0.0, 0.5, 1.0], id="min-max"),
        pytest.param([-2.0, 0.0], [0.0, 1.0], id="negative-values"),
    ],
)
def test_normalize(raw: list[float], expected: list[float]) -> None:
    assert weighers.normalize(raw) == expected


def two_hosts(*claims: Claim, multipliers: Multipliers | None = None) -> PlacementState:
    return PlacementState.rebuild([make_host("a"), make_host("b")], claims, multipliers=multipliers)


def best(state: PlacementState, **request: object) -> str:
    candidates = [Candidate(state.host("a")), Candidate(state.host("b"))]
    totals = weighers.weigh(candidates, make_request(**request), state, state.multipliers)  # type: ignore[arg-type]
    return "a" if totals[0] > totals[1] else "b"


@pytest.mark.parametrize(
    ("multipliers", "winner"),
    [
        pytest.param(Multipliers(), "b", id="positive-ram-spreads-to-emptier-host"),
        pytest.param(
            Multipliers(ram=-1.0, cpu=-1.0, disk=-1.0),
            "a",
            id="negative-ram-packs-onto-fuller-host",
        ),
        pytest.param(Multipliers(ram=0.0, cpu=0.0, disk=0.0), "b", id="all-zero-ties"),
    ],
)
def test_spread_and_pack(multipliers: Multipliers, winner: str) -> None:
    state = two_hosts(Claim("x", "a", vcpus=4, memory_mib=8 * GIB), multipliers=multipliers)
    assert best(state) == winner


def test_free_resource_raw_values() -> None:
    state = two_hosts(Claim("x", "a", vcpus=4, memory_mib=8 * GIB, disk_mib=GIB))
    c = Candidate(state.host("a"))
    r = make_request()
    assert weighers.free_ram(c, r, state) == 56 * GIB
    assert weighers.free_vcpus(c, r, state) == 64 - 4
    assert weighers.free_disk(c, r, state) == 499 * GIB


@pytest.mark.parametrize(
    ("policy", "winner"),
    [
        pytest.param(GroupPolicy.SOFT_AFFINITY, "a", id="soft-affinity-joins-members"),
        pytest.param(GroupPolicy.SOFT_ANTI_AFFINITY, "b", id="soft-anti-affinity-avoids-members"),
    ],
)
def test_soft_group_weighers(policy: GroupPolicy, winner: str) -> None:
    member = Claim("m", "a", vcpus=1, memory_mib=GIB, group=ServerGroup("g", policy))
    state = two_hosts(member, multipliers=Multipliers(ram=0, cpu=0, disk=0))
    assert best(state, group="g", policy=policy) == winner


def test_numa_packing_prefers_hosts_with_pinned_guests() -> None:
    state = PlacementState.rebuild(
        [make_host("a", dedicated="all"), make_host("b", dedicated="all")],
        [Claim("x", "a", pcpus=4)],
        multipliers=Multipliers(ram=0, cpu=0, disk=0),
    )
    from kubevisor.core.placement.model import CellFit, NumaFit

    fit = NumaFit(cells=(CellFit(guest_cell=0, host_cell=0, memory_mib=GIB),))
    totals = weighers.weigh(
        [Candidate(state.host("a"), fit), Candidate(state.host("b"), fit)],
        make_request(dedicated=True),
        state,
        state.multipliers,
    )
    assert totals[0] > totals[1]
