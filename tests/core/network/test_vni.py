"""VXLAN ids of overlay Networks (core.network.vni): unique, allocated from 4096 up."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kubevisor.core.network import vni
from kubevisor.core.network.ipam import Reason, Refusal
from kubevisor.core.network.vni import VniPool


def test_allocation_starts_at_the_automatic_range_and_keeps_what_a_network_holds() -> None:
    pool = VniPool()
    assert pool.allocate("ns/a") == 4096
    assert pool.allocate("ns/b") == 4097
    assert pool.allocate("ns/a") == 4096
    assert pool.allocate("ns/c", 100) == 100, "below the automatic range: named ones"
    assert pool.allocate("ns/d", 4098) == 4098
    assert pool.allocate("ns/e") == 4099


def test_a_vni_another_network_holds_is_refused_naming_it() -> None:
    pool = VniPool()
    pool.allocate("ns/a", 100)
    refused = pool.allocate("ns/b", 100)
    assert refused == Refusal(Reason.VNI_TAKEN, "VNI 100 is network ns/a's")
    assert pool.held_by("ns/b") is None


def test_release_frees_the_vni_for_the_next_network() -> None:
    pool = VniPool()
    first = pool.allocate("ns/a")
    pool.allocate("ns/b")
    assert pool.release("ns/a") == first
    assert pool.allocate("ns/c") == first
    assert pool.release("ns/zzz") is None


def test_an_exhausted_range_says_so_with_the_numbers() -> None:
    pool = VniPool(automatic=(10, 11))
    pool.allocate("ns/a")
    pool.allocate("ns/b")
    refused = pool.allocate("ns/c")
    assert isinstance(refused, Refusal) and refused.reason == Reason.VNIS_EXHAUSTED
    assert refused.message == "no free VNI (2 of 2 of 10..11 in use)"


def test_rebuild_reports_the_later_of_two_networks_recording_one_vni() -> None:
    pool = VniPool()
    conflicts = vni.rebuild(pool, [("ns/a", 5000), ("ns/b", 5000), ("ns/c", 4096)])
    assert [(c.network, c.vni) for c in conflicts] == [("ns/b", 5000)]
    assert pool.allocate("ns/d") == 4097


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["allocate", "named", "release"]), st.integers(0, 9)),
        max_size=50,
    )
)
def test_never_two_networks_with_one_vni_and_a_rebuild_is_the_same_pool(
    ops: list[tuple[str, int]],
) -> None:
    pool = VniPool(automatic=(4096, 4100))
    for op, n in ops:
        network = f"ns/n{n}"
        if op == "release":
            pool.release(network)
        else:
            pool.allocate(network, 4094 + n if op == "named" else None)
        held = dict(pool.assignments())
        assert len(set(held.values())) == len(held)
    copy = VniPool(automatic=(4096, 4100))
    assert vni.rebuild(copy, list(pool.assignments().items())) == ()
    assert dict(copy.assignments()) == dict(pool.assignments())
    assert copy.allocate("ns/new") == pool.allocate("ns/new")
