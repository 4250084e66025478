"""The placement state (placement.state): claims, releases, rebuilds, conflicts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubevisor.core.placement import scheduler
from kubevisor.core.placement.model import Claim, GroupPolicy, HostUsage, ServerGroup
from kubevisor.core.placement.state import ClaimConflict, PlacementState, empty_usage

from .builders import GIB, make_host, make_request


def test_claim_and_release_are_exact_inverses() -> None:
    host = make_host(dedicated="half", hugepages={2048: 1024})
    state = PlacementState.rebuild([host], [])
    decisions = [
        scheduler.place(
            state,
            make_request(
                f"vm{i}", vcpus=2, dedicated=i % 2 == 0, hugepage_kib=2048 if i == 2 else None
            ),
        )
        for i in range(4)
    ]
    assert all(isinstance(d, scheduler.Decision) for d in decisions)
    assert state.usage("h1") != empty_usage(host)
    for i in range(4):
        state.release(f"vm{i}")
    assert state.usage("h1") == empty_usage(host)


def test_conflicting_claims_are_refused() -> None:
    state = PlacementState.rebuild([make_host(dedicated="all")], [])
    decision = scheduler.place(state, make_request("a", vcpus=2, dedicated=True))
    assert isinstance(decision, scheduler.Decision)
    with pytest.raises(ClaimConflict, match="already holds"):
        state.claim(decision.claim)
    with pytest.raises(ClaimConflict, match="already in use"):
        state.claim(replace(decision.claim, vm="b"))
    with pytest.raises(ClaimConflict, match="unknown host"):
        state.claim(Claim("c", "nowhere"))


def test_rebuild_equals_incremental_and_reports_conflicts() -> None:
    hosts = [make_host(f"h{i}", dedicated="half") for i in range(3)]
    live = PlacementState.rebuild(hosts, [])
    for i in range(12):
        scheduler.place(
            live,
            make_request(
                f"vm{i}",
                vcpus=1 + i % 3,
                dedicated=i % 4 == 0,
                group="g",
                policy=GroupPolicy.SOFT_ANTI_AFFINITY,
            ),
        )
    claims = list(live.claims().values())
    again = PlacementState.rebuild(hosts, [*claims, replace(claims[0], vm="dup")])
    for host in hosts:
        assert again.usage(host.name) == live.usage(host.name)
        assert again.group_members("g", host.name) == live.group_members("g", host.name)
    assert [c.vm for c in again.conflicts] == ["dup"]


def test_group_counts_follow_claims() -> None:
    group = ServerGroup("db", GroupPolicy.ANTI_AFFINITY)
    state = PlacementState.rebuild([make_host("a"), make_host("b")], [])
    state.claim(Claim("x", "a", memory_mib=GIB, group=group))
    state.claim(Claim("y", "b", memory_mib=GIB, group=group))
    assert dict(state.group_hosts("db")) == {"a": 1, "b": 1}
    state.release("x")
    assert dict(state.group_hosts("db")) == {"b": 1}
    assert state.release("x") is None


def test_group_rule_is_held_by_the_oldest_other_member() -> None:
    strict = ServerGroup("db", GroupPolicy.ANTI_AFFINITY, max_per_host=2)
    loose = ServerGroup("db", GroupPolicy.SOFT_ANTI_AFFINITY)
    state = PlacementState.rebuild([make_host("a")], [])
    assert state.group_rule("db", besides="x") is None
    state.claim(Claim("x", "a", memory_mib=GIB, group=strict))
    state.claim(Claim("y", "a", memory_mib=GIB, group=loose))
    assert state.group_rule("db", besides="z") == ("x", strict)
    assert state.group_rule("db", besides="x") == ("y", loose), "a VM never conflicts with itself"
    state.release("x")
    assert state.group_rule("db", besides="z") == ("y", loose)
    state.release("y")
    assert state.group_rule("db", besides="z") is None


def test_host_update_keeps_claims_and_removal_releases_them() -> None:
    state = PlacementState.rebuild([make_host("a")], [Claim("x", "a", vcpus=2, memory_mib=GIB)])
    state.add_host(make_host("a", schedulable=False))
    assert state.usage("a").vcpus == 2
    assert list(state.ranked()) == []
    released = state.remove_host("a")
    assert [c.vm for c in released] == ["x"] and len(state) == 0


def test_image_and_shared_storage_indexes_follow_host_updates() -> None:
    image, other = "a" * 64, "b" * 64
    state = PlacementState.rebuild(
        [
            make_host("a", images=frozenset({image}), shared_storage="nfs"),
            make_host("b", images=frozenset({image, other})),
        ],
        [],
    )
    assert state.hosts_caching(image) == {"a", "b"}
    assert state.hosts_caching(other) == {"b"}
    assert state.hosts_sharing("nfs") == {"a"}
    state.add_host(make_host("a", images=frozenset({other}), shared_storage="ceph"))
    assert state.hosts_caching(image) == {"b"}
    assert state.hosts_caching(other) == {"a", "b"}
    assert state.hosts_sharing("nfs") == frozenset()
    assert state.hosts_sharing("ceph") == {"a"}
    state.remove_host("b")
    assert state.hosts_caching(image) == frozenset()
    assert state.hosts_caching(other) == {"a"}


def test_ranking_follows_claims() -> None:
    state = PlacementState.rebuild([make_host("a"), make_host("b")], [])
    assert list(state.ranked()) == ["a", "b"]
    state.claim(Claim("x", "a", vcpus=2, memory_mib=GIB))
    assert list(state.ranked()) == ["b", "a"]
    state.release("x")
    assert list(state.ranked()) == ["a", "b"]
    assert state.usage("a") == HostUsage(cells=state.usage("a").cells)


def test_claim_on_a_cell_the_host_lacks_is_a_conflict_not_a_crash() -> None:
    from kubevisor.core.placement.model import CellFit, NumaFit

    fit = NumaFit(cells=(CellFit(guest_cell=0, host_cell=7, memory_mib=64),))
    claim = Claim(vm="ns/vm", host="h1", memory_mib=64, numa=fit)
    state = PlacementState.rebuild([make_host("h1", cells=1)], [claim])
    assert state.conflicts == [claim]
    with pytest.raises(ClaimConflict, match=r"NUMA cells \[7\]"):
        state.claim(claim)
