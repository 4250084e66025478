"""Weighers (placement.weighers): normalised 0..1, multiplied, sign picks spread or pack."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubevisor.core.placement import weighers
from kubevisor.core.placement.model import Claim, GroupPolicy, HostSnapshot, Request, ServerGroup
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


# -- disk weighers: cached images, shared storage ----------------------------------------------

IMAGE_A, IMAGE_B = "a" * 64, "b" * 64
ONLY_DISKS = Multipliers(ram=0, cpu=0, disk=0)


@pytest.mark.parametrize(
    ("cached", "wanted", "raw"),
    [
        pytest.param(frozenset(), frozenset(), 0.0, id="no-source-images-scores-nothing"),
        pytest.param(frozenset({IMAGE_A}), frozenset(), 0.0, id="cache-without-request"),
        pytest.param(frozenset(), frozenset({IMAGE_A}), 0.0, id="image-not-cached"),
        pytest.param(frozenset({IMAGE_A}), frozenset({IMAGE_A}), 1.0, id="image-cached"),
        pytest.param(frozenset({IMAGE_B}), frozenset({IMAGE_A, IMAGE_B}), 0.5, id="half-cached"),
    ],
)
def test_image_locality_is_the_share_of_images_cached(
    cached: frozenset[str], wanted: frozenset[str], raw: float
) -> None:
    state = PlacementState.rebuild([make_host("a", images=cached)], [])
    candidate = Candidate(state.host("a"))
    assert weighers.image_locality(candidate, make_request(images=wanted), state) == raw


@pytest.mark.parametrize(
    ("host_storage", "vm_storage", "raw"),
    [
        pytest.param("nfs", "nfs", 1.0, id="same-shared-storage"),
        pytest.param("ceph", "nfs", 0.0, id="other-shared-storage"),
        pytest.param(None, "nfs", 0.0, id="host-without-shared-storage"),
        pytest.param("nfs", None, 0.0, id="vm-on-local-disks"),
        pytest.param(None, None, 0.0, id="neither"),
    ],
)
def test_shared_storage_scores_the_vms_own_storage(
    host_storage: str | None, vm_storage: str | None, raw: float
) -> None:
    state = PlacementState.rebuild([make_host("a", shared_storage=host_storage)], [])
    candidate = Candidate(state.host("a"))
    request = make_request(shared_storage=vm_storage)
    assert weighers.shared_storage(candidate, request, state) == raw


def test_the_host_with_the_image_breaks_a_tie() -> None:
    state = PlacementState.rebuild(
        [make_host("a", images=frozenset({IMAGE_A})), make_host("b")], []
    )
    candidates = [Candidate(state.host("a")), Candidate(state.host("b"))]
    plain, sourced = make_request(), make_request(images=frozenset({IMAGE_A}))
    assert weighers.weigh(candidates, plain, state, state.multipliers) == [0.0, 0.0]
    assert weighers.weigh(candidates, sourced, state, state.multipliers) == [1.0, 0.0]


def test_shared_storage_outweighs_every_default_weigher() -> None:
    # a is fuller (every free-resource weigher prefers b) but has the VM's disks.
    state = PlacementState.rebuild(
        [make_host("a", shared_storage="nfs"), make_host("b", images=frozenset({IMAGE_A}))],
        [Claim("x", "a", vcpus=30, memory_mib=40 * GIB, disk_mib=200 * GIB)],
    )
    assert best(state, images=frozenset({IMAGE_A})) == "b"
    assert best(state, images=frozenset({IMAGE_A}), shared_storage="nfs") == "a"


@pytest.mark.parametrize("multipliers", [Multipliers(), ONLY_DISKS], ids=["default", "only-disks"])
def test_disk_weighers_leave_a_request_without_images_or_storage_alone(
    multipliers: Multipliers,
) -> None:
    hosts = [
        make_host("a", images=frozenset({IMAGE_A}), shared_storage="nfs"),
        make_host("b"),
    ]
    state = PlacementState.rebuild(hosts, [Claim("x", "b", vcpus=4)], multipliers=multipliers)
    off = PlacementState.rebuild(
        hosts,
        [Claim("x", "b", vcpus=4)],
        multipliers=replace(multipliers, image_locality=0.0, shared_storage=0.0),
    )
    candidates = [Candidate(state.host("a")), Candidate(state.host("b"))]
    request = make_request()
    assert weighers.weigh(candidates, request, state, state.multipliers) == weighers.weigh(
        candidates, request, off, off.multipliers
    )


@pytest.mark.parametrize(
    ("host", "request_", "notes"),
    [
        pytest.param(make_host(), make_request(), (), id="nothing-to-say"),
        pytest.param(
            make_host(images=frozenset({IMAGE_A})),
            make_request(images=frozenset({IMAGE_A})),
            ("has 1 of 1 images cached",),
            id="image-cached",
        ),
        pytest.param(
            make_host(images=frozenset({IMAGE_A})),
            make_request(images=frozenset({IMAGE_A, IMAGE_B})),
            ("has 1 of 2 images cached",),
            id="one-image-missing",
        ),
        pytest.param(
            make_host(shared_storage="nfs"),
            make_request(shared_storage="nfs"),
            ("has the VM's shared storage nfs",),
            id="shared-storage",
        ),
        pytest.param(
            make_host(shared_storage="ceph"),
            make_request(images=frozenset({IMAGE_A}), shared_storage="nfs"),
            ("has 0 of 1 images cached", "lacks the VM's shared storage nfs"),
            id="neither",
        ),
    ],
)
def test_notes_name_what_the_host_has(
    host: HostSnapshot, request_: Request, notes: tuple[str, ...]
) -> None:
    assert weighers.notes(host, request_) == notes


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        pytest.param("image_locality=2.5", ("image_locality", 2.5), id="new-weigher"),
        pytest.param("ram=-1", ("ram", -1.0), id="negative-packs"),
    ],
)
def test_multiplier_from_the_command_line(text: str, parsed: tuple[str, float]) -> None:
    assert weighers.multiplier(text) == parsed


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("image_locality", id="no-value"),
        pytest.param("images=2", id="unknown-weigher"),
        pytest.param("ram=lots", id="not-a-number"),
    ],
)
def test_bad_multiplier_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        weighers.multiplier(text)


def test_multiplier_help_lists_every_weigher_with_its_default() -> None:
    text = weighers.multipliers_help()
    assert "image_locality=1" in text and "shared_storage=100" in text
    assert all(f"{name}=" in text for name in weighers.MULTIPLIER_DEFAULTS)
