"""select_host / place (placement.scheduler): bursts, groups, explanations, subsets."""

from __future__ import annotations

import random

import pytest

from kubevisor.core.placement import scheduler
from kubevisor.core.placement.model import Capability, Claim, GroupPolicy, Rejection
from kubevisor.core.placement.scheduler import Decision, NoFit, Options
from kubevisor.core.placement.state import PlacementState
from kubevisor.core.placement.weighers import Multipliers

from .builders import GIB, make_host, make_request


def cluster(n: int = 4, **kw: object) -> PlacementState:
    return PlacementState.rebuild([make_host(f"h{i}", **kw) for i in range(n)], [])  # type: ignore[arg-type]


def test_burst_never_double_books() -> None:
    state = cluster(3, dedicated="all")
    placed = [
        scheduler.place(state, make_request(f"vm{i}", vcpus=4, dedicated=True)) for i in range(14)
    ]
    ok = [d for d in placed if isinstance(d, Decision)]
    assert len(ok) == 12  # 3 hosts x 2 cells x 8 pCPUs / 4
    pins = [p.pcpu for d in ok if d.host == "h0" and d.numa for c in d.numa.cells for p in c.pins]
    assert len(pins) == len(set(pins)) == 16
    last = placed[-1]
    assert isinstance(last, NoFit)
    assert last.message.startswith(
        "0/3 hosts fit: 3 insufficient dedicated CPUs (need 4, best has 0 free)"
    )


def test_spreads_by_default() -> None:
    state = cluster(4)
    hosts = [scheduler.place(state, make_request(f"vm{i}")) for i in range(4)]
    assert sorted(d.host for d in hosts if isinstance(d, Decision)) == ["h0", "h1", "h2", "h3"]


def test_anti_affinity_spreads_then_explains() -> None:
    state = cluster(3)
    for i in range(3):
        assert isinstance(scheduler.place(state, make_request(f"db{i}", group="db")), Decision)
    assert {state.claims()[f"db{i}"].host for i in range(3)} == {"h0", "h1", "h2"}
    refused = scheduler.place(state, make_request("db3", group="db"))
    assert isinstance(refused, NoFit)
    assert refused.message == (
        '0/3 hosts fit: 3 already run 1 of anti-affinity group "db" (maxPerHost 1)'
    )


@pytest.mark.parametrize(
    ("policy", "max_per_host", "asks"),
    [
        pytest.param(GroupPolicy.SOFT_ANTI_AFFINITY, 1, "soft-anti-affinity", id="soft-policy"),
        pytest.param(
            GroupPolicy.ANTI_AFFINITY, 5, "anti-affinity with maxPerHost 5", id="max-per-host-5"
        ),
    ],
)
def test_a_member_cannot_loosen_its_groups_rule(
    policy: GroupPolicy, max_per_host: int, asks: str
) -> None:
    # Six members sit 2 per host under maxPerHost 2; a seventh that declares a looser
    # rule is not placed as a third on a host: it is not placed, and the message names
    # the member whose rule the group holds.
    state = cluster(3)
    for i in range(6):
        placed = scheduler.place(state, make_request(f"ns/db-{i}", group="ns/db", max_per_host=2))
        assert isinstance(placed, Decision)
    seventh = make_request("ns/db-6", group="ns/db", policy=policy, max_per_host=max_per_host)
    refused = scheduler.place(state, seventh)
    assert isinstance(refused, NoFit)
    assert refused.message == (
        '0/3 hosts fit: 3 group "ns/db" is anti-affinity with maxPerHost 2 '
        f"(as member ns/db-0 holds it), the VM asks {asks}"
    )
    assert {h: state.group_members("ns/db", h) for h in ("h0", "h1", "h2")} == {
        "h0": 2,
        "h1": 2,
        "h2": 2,
    }
    agreeing = scheduler.place(state, make_request("ns/db-7", group="ns/db", max_per_host=2))
    assert isinstance(agreeing, NoFit)  # the rule itself: every host holds 2 already


def test_affinity_follows_the_first_member() -> None:
    state = cluster(5)
    first = scheduler.place(state, make_request("w0", group="web", policy=GroupPolicy.AFFINITY))
    assert isinstance(first, Decision)
    for i in range(1, 4):
        d = scheduler.place(state, make_request(f"w{i}", group="web", policy=GroupPolicy.AFFINITY))
        assert isinstance(d, Decision) and d.host == first.host


def test_soft_affinity_prefers_but_does_not_require() -> None:
    hosts_ = [make_host(f"h{i}", cell_memory_mib=4 * GIB) for i in range(2)]
    state = PlacementState.rebuild(hosts_, [], multipliers=Multipliers(soft_affinity=10.0))
    hosts = []
    for i in range(4):
        d = scheduler.place(
            state,
            make_request(f"s{i}", memory_mib=3 * GIB, group="s", policy=GroupPolicy.SOFT_AFFINITY),
        )
        assert isinstance(d, Decision)
        hosts.append(d.host)
    assert hosts[0] == hosts[1] and hosts[2] != hosts[0]


IMAGE = "c" * 64


def test_a_host_with_the_vms_shared_storage_is_found_outside_the_window() -> None:
    # h19 is the fullest host (ranked last) and the only one with the VM's disks.
    hosts = [make_host(f"h{i:02}", shared_storage="nfs" if i == 19 else None) for i in range(20)]
    state = PlacementState.rebuild(hosts, [Claim("x", "h19", vcpus=8, memory_mib=32 * GIB)])
    request = make_request(shared_storage="nfs")
    d = scheduler.select_host(state, request, options=Options(window=4))
    assert isinstance(d, Decision) and d.host == "h19"
    assert d.notes == ("has the VM's shared storage nfs",)
    assert d.message == (
        f"placed on host h19 ({d.considered} considered): has the VM's shared storage nfs"
    )


def test_among_selected_hosts_those_with_the_vms_disks_come_first() -> None:
    hosts = [
        make_host(
            f"h{i:02}",
            labels={"gpu": "yes"} if i >= 36 else {},
            shared_storage="nfs" if i == 39 else None,
            images=frozenset({IMAGE}) if i == 38 else frozenset(),
        )
        for i in range(40)
    ]
    state = PlacementState.rebuild(hosts, [])
    one = Options(window=1)
    for request, host in (
        (make_request(selector={"gpu": "yes"}), "h36"),
        (make_request(selector={"gpu": "yes"}, images=frozenset({IMAGE})), "h38"),
        (
            make_request(selector={"gpu": "yes"}, images=frozenset({IMAGE}), shared_storage="nfs"),
            "h39",
        ),
    ):
        d = scheduler.select_host(state, request, options=one)
        assert isinstance(d, Decision) and (d.host, d.considered) == (host, 1)


def test_without_room_on_its_shared_storage_the_vm_goes_elsewhere() -> None:
    hosts = [make_host("roomy"), make_host("small", shared_storage="nfs", cell_memory_mib=GIB)]
    state = PlacementState.rebuild(hosts, [])
    d = scheduler.select_host(state, make_request(memory_mib=4 * GIB, shared_storage="nfs"))
    assert isinstance(d, Decision) and d.host == "roomy"
    assert d.notes == ("lacks the VM's shared storage nfs",)


def test_hosts_with_the_image_are_weighed_first_unless_the_multiplier_is_off() -> None:
    hosts = [
        make_host(f"h{i:02}", images=frozenset({IMAGE}) if i == 9 else frozenset())
        for i in range(10)
    ]
    state = PlacementState.rebuild(hosts, [])
    request = make_request(images=frozenset({IMAGE}))
    d = scheduler.select_host(state, request, options=Options(window=2))
    assert isinstance(d, Decision) and d.host == "h09" and d.alternates == ("h00",)
    assert d.notes == ("has 1 of 1 images cached",)
    off = PlacementState.rebuild(hosts, [], multipliers=Multipliers(image_locality=0.0))
    d = scheduler.select_host(off, request, options=Options(window=2))
    assert isinstance(d, Decision) and d.host == "h00" and d.alternates == ("h01",)
    assert d.notes == ("has 0 of 1 images cached",)


def test_many_hosts_with_the_image_are_streamed_in_rank_order() -> None:
    # Most hosts cache the image: they are taken from the ranking, best first.
    hosts = [
        make_host(f"h{i:02}", images=frozenset({IMAGE}) if i else frozenset()) for i in range(10)
    ]
    claims = [Claim("x", "h01", vcpus=8, memory_mib=32 * GIB)]
    state = PlacementState.rebuild(hosts, claims)
    d = scheduler.select_host(
        state, make_request(images=frozenset({IMAGE})), options=Options(window=2)
    )
    assert isinstance(d, Decision) and d.host == "h02" and d.considered == 2
    assert set(d.alternates) == {"h03"}


def test_mixed_failure_explanation() -> None:
    state = PlacementState.rebuild(
        [
            make_host("small", cell_memory_mib=2 * GIB),
            make_host("cordoned", schedulable=False),
            make_host("down", ready=False),
            make_host("other-zone", labels={"zone": "b"}),
        ],
        [],
    )
    refused = scheduler.place(state, make_request(memory_mib=8 * GIB, selector={}))
    assert isinstance(refused, Decision)
    refused = scheduler.place(state, make_request("x", memory_mib=60 * GIB))
    assert isinstance(refused, NoFit)
    assert refused.message == (
        "0/4 hosts fit: 1 insufficient memory (need 60Gi, best has 56Gi free), "
        "1 more memory than the host has (need 60Gi, best has 4Gi in all), "
        "1 not ready, 1 unschedulable"
    )


def test_host_selector_uses_the_label_index() -> None:
    hosts = [make_host(f"h{i}", labels={"gpu": "yes"} if i == 7 else {}) for i in range(40)]
    state = PlacementState.rebuild(hosts, [])
    d = scheduler.select_host(state, make_request(selector={"gpu": "yes"}))
    assert isinstance(d, Decision) and d.host == "h7" and d.considered == 1


def test_subset_size_picks_among_the_best_with_injected_random() -> None:
    state = cluster(6)
    opts = Options(host_subset_size=3)
    chosen = {
        d.host
        for seed in range(30)
        if isinstance(
            d := scheduler.select_host(
                state, make_request(), options=opts, rng=random.Random(seed)
            ),
            Decision,
        )
    }
    assert len(chosen) == 3
    again = [
        scheduler.select_host(state, make_request(), options=opts, rng=random.Random(7))
        for _ in range(2)
    ]
    assert again[0] == again[1]


def test_select_host_does_not_change_the_state() -> None:
    state = cluster(2, dedicated="all")
    before = {h.name: state.usage(h.name) for h in state.hosts()}
    scheduler.select_host(state, make_request(vcpus=4, dedicated=True))
    assert before == {h.name: state.usage(h.name) for h in state.hosts()}


def test_fast_path_matches_reference_on_a_plain_cluster() -> None:
    state = cluster(10)
    for i in range(30):
        request = make_request(f"vm{i}", vcpus=1 + i % 4, memory_mib=(1 + i % 3) * GIB)
        fast = scheduler.select_host(state, request, options=Options(window=10))
        ref = scheduler.select_host_exhaustive(state, request)
        assert isinstance(fast, Decision) and isinstance(ref, Decision)
        assert fast.host == ref.host
        state.claim(fast.claim)


def test_migration_target_excludes_source_and_checks_cpu() -> None:
    state = PlacementState.rebuild(
        [make_host("src"), make_host("old", cpu_model="Haswell"), make_host("dst")], []
    )
    request = make_request(
        exclude=frozenset({"src"}),
        required_cpu_model="Skylake-Server",
        hypervisor_types=frozenset({"kvm"}),
    )
    d = scheduler.select_host(state, request)
    assert isinstance(d, Decision) and d.host == "dst"


def test_host_passthrough_migration_target_needs_the_same_cpu() -> None:
    # The controller picks migration targets with evaluate / select_host_exhaustive; the
    # VM's own claim on its source host is what the cpu_passthrough filter compares with.
    hosts = [
        make_host("src"),
        make_host("newer", cpu_model="Icelake-Server"),
        make_host("fewer-flags", cpu_features=frozenset({"avx2"})),
        make_host("twin"),
    ]
    request = make_request("default/pt", cpu_mode="host-passthrough")
    running = Claim(vm="default/pt", host="src", vcpus=2, memory_mib=2 * GIB)
    state = PlacementState.rebuild(hosts, [running])
    for name in ("newer", "fewer-flags"):
        refused = scheduler.evaluate(state, request, name)
        assert isinstance(refused, Rejection) and refused.filter == "cpu_passthrough"
    others = [h.name for h in state.hosts() if h.name != "src"]
    target = scheduler.select_host_exhaustive(state, request, hosts=others)
    assert isinstance(target, Decision) and target.host == "twin"
    # Without a twin, the migration has nowhere to go, and says why.
    stuck = scheduler.select_host_exhaustive(state, request, hosts=["newer", "fewer-flags"])
    assert isinstance(stuck, NoFit)
    assert "2 CPU differs from the host-passthrough source" in stuck.message
    # A host-model guest may go to the newer CPU.
    relaxed = make_request("default/pt", cpu_mode="host-model")
    assert not isinstance(scheduler.evaluate(state, relaxed, "newer"), Rejection)


def test_uefi_guest_only_on_hosts_reporting_uefi() -> None:
    hosts = [make_host("bios-only"), make_host("ovmf", capabilities=frozenset({Capability.UEFI}))]
    state = PlacementState.rebuild(hosts, [])
    decision = scheduler.place(state, make_request(capabilities=frozenset({Capability.UEFI})))
    assert isinstance(decision, Decision) and decision.host == "ovmf"
    refused = scheduler.select_host(
        state,
        make_request(
            "default/sb", capabilities=frozenset({Capability.UEFI, Capability.SECURE_BOOT})
        ),
    )
    assert isinstance(refused, NoFit)
    assert refused.message.startswith(
        "0/2 hosts fit: 1 lacks secure-boot, 1 lacks secure-boot, uefi"
    )
