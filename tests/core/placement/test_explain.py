"""Explanations (placement.explain): the one-line summary a human can act on."""

from __future__ import annotations

import pytest

from kubevisor.core.placement import explain
from kubevisor.core.placement.model import (
    Claim,
    GroupPolicy,
    HostSnapshot,
    Rejection,
    Request,
    ServerGroup,
    ThreadPolicy,
)
from kubevisor.core.placement.state import PlacementState

from .builders import GIB, make_host, make_request


def mem(free: int) -> Rejection:
    return Rejection("memory", "insufficient memory", "", need=8 * GIB, free=free, unit="MiB")


def test_message_in_the_issue_style() -> None:
    full = 'already run 1 of anti-affinity group "db" (maxPerHost 1)'
    rejections = (
        [mem(f * GIB) for f in (1, 2, 6, 3, 0, 5, 4)]
        + [Rejection("anti_affinity", full, "")] * 4
        + [Rejection("schedulable", "unschedulable", "")]
    )
    assert explain.summarize(12, rejections).message == (
        "0/12 hosts fit: 7 insufficient memory (need 8Gi, best has 6Gi free), "
        f"4 {full}, 1 unschedulable"
    )


def test_no_hosts() -> None:
    assert explain.summarize(0, []).message == "0/0 hosts fit: no hypervisor hosts"


def test_single_host_and_ties_sorted_by_name() -> None:
    rejections = [
        Rejection("ready", "not ready", ""),
        Rejection("schedulable", "in maintenance", ""),
    ]
    assert (
        explain.summarize(3, rejections).message == "1/3 hosts fit: 1 in maintenance, 1 not ready"
    )
    assert explain.summarize(1, [rejections[0]]).message == "0/1 host fit: 1 not ready"


def members(group: ServerGroup, counts: dict[str, int]) -> list[Claim]:
    return [
        Claim(vm=f"{host}-{i}", host=host, vcpus=1, memory_mib=GIB, group=group)
        for host, count in counts.items()
        for i in range(count)
    ]


DB2 = ServerGroup("db", GroupPolicy.ANTI_AFFINITY, max_per_host=2)

# Each case: hosts, claims, the request, the whole explanation. Every line names the
# resource, what the VM needs and what the best host it counts has, in spec units.
EXPLAINED = [
    pytest.param(
        [make_host(cells=2, cores=2, threads=2, dedicated="all")],
        [],
        make_request(vcpus=4, dedicated=True, thread_policy=ThreadPolicy.ISOLATE),
        "0/1 host fit: 1 insufficient whole free cores for thread policy isolate on any NUMA "
        "cell (need 4, best has 2 free on one cell)",
        id="numa-rejection-keeps-its-figures",
    ),
    pytest.param(
        [make_host("none"), make_host("split", cells=2, cores=3, threads=1, dedicated="all")],
        [],
        make_request(vcpus=4, dedicated=True),
        "0/2 hosts fit: 1 insufficient dedicated CPUs (need 4, best has 0 free), "
        "1 insufficient dedicated CPUs on any NUMA cell (need 4, best has 3 free on one cell)",
        id="hosts-rejected-at-numa-level-have-their-best-too",
    ),
    pytest.param(
        [make_host("a", labels={"disk": "hdd"}), make_host("b"), make_host("c")],
        [],
        make_request(selector={"disk": "ssd"}),
        "0/3 hosts fit: 3 didn't match host selector disk=ssd",
        id="host-selector-names-the-label",
    ),
    pytest.param(
        [make_host("a"), make_host("b")],
        [
            *members(DB2, {"a": 2}),
            *members(ServerGroup("db", GroupPolicy.ANTI_AFFINITY, 3), {"b": 3}),
        ],
        make_request(group="db", max_per_host=2, name="db-new"),
        '0/2 hosts fit: 1 already run 2 of anti-affinity group "db" (maxPerHost 2), '
        '1 already run 3 of anti-affinity group "db" (maxPerHost 2)',
        id="anti-affinity-keeps-member-counts",
    ),
    pytest.param(
        [make_host("small", cells=1, cores=4, threads=2, dedicated="half")],
        [],
        make_request(vcpus=6),
        "0/1 host fit: 1 more vCPUs than the host's shared CPUs (need 6, best has 4 in all)",
        id="per-vm-maximum-is-not-reported-as-free",
    ),
    pytest.param(
        [make_host(reserved_memory_mib=80 * GIB)],
        [],
        make_request(memory_mib=2 * GIB),
        "0/1 host fit: 1 reserves all its memory (need 2Gi, best has 0Mi free)",
        id="reserved-above-memory-says-so",
    ),
    pytest.param(
        [make_host(cells=1, cell_memory_mib=GIB)],
        [],
        make_request(memory_mib=1530),
        "0/1 host fit: 1 more memory than the host has (need 1530Mi, best has 1Gi in all)",
        id="memory-in-exact-quantities",
    ),
    pytest.param(
        [make_host(hugepages={2048: 512})],
        [],
        make_request(memory_mib=4 * GIB, hugepage_kib=2048),
        "0/1 host fit: 1 insufficient 2Mi huge pages (need 4Gi, best has 2Gi free)",
        id="huge-pages-in-memory-units",
    ),
]


@pytest.mark.parametrize(("hosts", "claims", "request_", "message"), EXPLAINED)
def test_explanation_keeps_the_figures(
    hosts: list[HostSnapshot], claims: list[Claim], request_: Request, message: str
) -> None:
    state = PlacementState.rebuild(hosts, claims)
    assert not state.conflicts
    assert explain.explain(state, request_).message == message
