"""One table per filter (placement.filters): each case passes or names its reason."""

from __future__ import annotations

import pytest

from kubevisor.core.placement import filters
from kubevisor.core.placement.model import (
    Claim,
    GroupPolicy,
    HostSnapshot,
    RatioOverrides,
    Request,
    ServerGroup,
)
from kubevisor.core.placement.state import PlacementState

from .builders import GIB, make_host, make_request

H = make_host


def state_with(host: HostSnapshot, *claims: Claim) -> PlacementState:
    return PlacementState.rebuild([host, make_host("other")], claims)


def member(vm: str, host: str, group: str, policy: GroupPolicy) -> Claim:
    return Claim(vm=vm, host=host, vcpus=1, memory_mib=GIB, group=ServerGroup(group, policy))


AA, AFF = GroupPolicy.ANTI_AFFINITY, GroupPolicy.AFFINITY

CASES = [
    pytest.param(filters.ready, H(), make_request(), (), None, id="ready-host-passes"),
    pytest.param(
        filters.ready, H(ready=False), make_request(), (), "not ready", id="not-ready-host"
    ),
    pytest.param(
        filters.schedulable,
        H(schedulable=False),
        make_request(),
        (),
        "unschedulable",
        id="cordoned-host",
    ),
    pytest.param(
        filters.schedulable,
        H(maintenance=True),
        make_request(),
        (),
        "in maintenance",
        id="maintenance-host",
    ),
    pytest.param(
        filters.excluded,
        H(),
        make_request(exclude=frozenset({"h1"})),
        (),
        "excluded",
        id="migration-source-excluded",
    ),
    pytest.param(
        filters.host_selector,
        H(labels={"zone": "a", "ssd": "1"}),
        make_request(selector={"zone": "a"}),
        (),
        None,
        id="selector-matches",
    ),
    pytest.param(
        filters.host_selector,
        H(labels={"zone": "b"}),
        make_request(selector={"zone": "a"}),
        (),
        "host selector",
        id="selector-value-differs",
    ),
    pytest.param(
        filters.host_selector,
        H(),
        make_request(selector={"zone": "a"}),
        (),
        "host selector",
        id="selector-label-missing",
    ),
    pytest.param(
        filters.cpu_compatibility,
        H(),
        make_request(cpu_features=frozenset({"avx2"})),
        (),
        None,
        id="features-present",
    ),
    pytest.param(
        filters.cpu_compatibility,
        H(),
        make_request(cpu_features=frozenset({"avx512f"})),
        (),
        "missing CPU features",
        id="feature-missing",
    ),
    pytest.param(
        filters.cpu_compatibility,
        H(),
        make_request(required_cpu_model="Icelake"),
        (),
        "CPU model",
        id="migration-model-differs",
    ),
    pytest.param(
        filters.cpu_compatibility,
        H(),
        make_request(hypervisor_type="qemu"),
        (),
        "hypervisor type",
        id="hypervisor-type-differs",
    ),
    pytest.param(
        filters.cpu_compatibility,
        H(),
        make_request(required_cpu_model="Skylake-Server", hypervisor_type="kvm"),
        (),
        None,
        id="migration-target-compatible",
    ),
    pytest.param(
        filters.anti_affinity,
        H(),
        make_request(group="db"),
        (member("a", "h1", "db", AA),),
        'anti-affinity group "db"',
        id="anti-affinity-member-present",
    ),
    pytest.param(
        filters.anti_affinity,
        H(),
        make_request(group="db"),
        (member("a", "other", "db", AA),),
        None,
        id="anti-affinity-member-elsewhere",
    ),
    pytest.param(
        filters.anti_affinity,
        H(),
        make_request(group="db", max_per_host=2),
        (member("a", "h1", "db", AA),),
        None,
        id="anti-affinity-max-per-host-2",
    ),
    pytest.param(
        filters.anti_affinity,
        H(),
        make_request(group="db", max_per_host=2),
        (member("a", "h1", "db", AA), member("b", "h1", "db", AA)),
        "anti-affinity",
        id="anti-affinity-max-per-host-reached",
    ),
    pytest.param(
        filters.affinity,
        H(),
        make_request(group="web", policy=AFF),
        (),
        None,
        id="affinity-first-member-anywhere",
    ),
    pytest.param(
        filters.affinity,
        H(),
        make_request(group="web", policy=AFF),
        (member("a", "other", "web", AFF),),
        "affinity group",
        id="affinity-group-elsewhere",
    ),
    pytest.param(
        filters.affinity,
        H(),
        make_request(group="web", policy=AFF),
        (member("a", "h1", "web", AFF),),
        None,
        id="affinity-group-here",
    ),
    pytest.param(filters.vcpus, H(), make_request(vcpus=16), (), None, id="vcpus-up-to-physical"),
    pytest.param(
        filters.vcpus,
        H(),
        make_request(vcpus=17),
        (),
        "insufficient vCPUs",
        id="vcpus-never-above-physical-whatever-ratio",
    ),
    pytest.param(
        filters.vcpus,
        H(),
        make_request(vcpus=4),
        (Claim("x", "h1", vcpus=61),),
        "insufficient vCPUs",
        id="vcpus-over-ratio-capacity",
    ),
    pytest.param(
        filters.vcpus,
        H(ratios=RatioOverrides(cpu=8.0)),
        make_request(vcpus=4),
        (Claim("x", "h1", vcpus=60),),
        None,
        id="vcpus-host-ratio-overrides-default",
    ),
    pytest.param(
        filters.vcpus,
        H(dedicated="all"),
        make_request(vcpus=1),
        (),
        "insufficient vCPUs",
        id="vcpus-shared-only-from-shared-set",
    ),
    pytest.param(
        filters.pcpus,
        H(dedicated="half"),
        make_request(vcpus=8, dedicated=True),
        (),
        None,
        id="pcpus-fit-dedicated-set",
    ),
    pytest.param(
        filters.pcpus,
        H(dedicated="half"),
        make_request(vcpus=8, dedicated=True, emulator=True),
        (),
        "dedicated CPUs",
        id="pcpus-emulator-thread-counts",
    ),
    pytest.param(
        filters.pcpus,
        H(),
        make_request(vcpus=1, dedicated=True),
        (),
        "dedicated CPUs",
        id="pcpus-none-without-dedicated-set",
    ),
    pytest.param(
        filters.memory, H(), make_request(memory_mib=64 * GIB), (), None, id="memory-exactly-full"
    ),
    pytest.param(
        filters.memory,
        H(),
        make_request(memory_mib=8 * GIB),
        (Claim("x", "h1", memory_mib=60 * GIB),),
        "insufficient memory",
        id="memory-used-up",
    ),
    pytest.param(
        filters.memory,
        H(reserved_memory_mib=4 * GIB),
        make_request(memory_mib=62 * GIB),
        (),
        "insufficient memory",
        id="memory-reserved-subtracted",
    ),
    pytest.param(
        filters.memory,
        H(ratios=RatioOverrides(memory=2.0)),
        make_request(memory_mib=65 * GIB),
        (),
        "insufficient memory",
        id="memory-one-vm-never-above-physical",
    ),
    pytest.param(
        filters.disk,
        H(disk_mib=10 * GIB),
        make_request(disk_mib=20 * GIB),
        (),
        "insufficient disk",
        id="disk-too-small",
    ),
    pytest.param(
        filters.disk,
        H(disk_mib=10 * GIB, ratios=RatioOverrides(disk=2.0)),
        make_request(disk_mib=8 * GIB),
        (Claim("x", "h1", disk_mib=10 * GIB),),
        None,
        id="disk-overcommitted-by-ratio",
    ),
    pytest.param(
        filters.hugepages,
        H(hugepages={2048: 1024}),
        make_request(memory_mib=4 * GIB, hugepage_kib=2048),
        (),
        None,
        id="hugepages-summed-over-cells",
    ),
    pytest.param(
        filters.hugepages,
        H(hugepages={2048: 1024}),
        make_request(memory_mib=5 * GIB, hugepage_kib=2048),
        (),
        "hugepages",
        id="hugepages-too-few",
    ),
    pytest.param(
        filters.numa,
        H(dedicated="all"),
        make_request(vcpus=8, dedicated=True),
        (),
        None,
        id="numa-fits-one-cell",
    ),
    pytest.param(
        filters.numa,
        H(dedicated="all"),
        make_request(vcpus=9, dedicated=True),
        (),
        "NUMA cell",
        id="numa-too-wide-for-a-cell",
    ),
    pytest.param(
        filters.numa, H(), make_request(vcpus=9), (), None, id="numa-ignores-non-numa-requests"
    ),
]


@pytest.mark.parametrize(("check", "host", "request_", "claims", "reason"), CASES)
def test_filter(
    check: filters.Filter,
    host: HostSnapshot,
    request_: Request,
    claims: tuple[Claim, ...],
    reason: str | None,
) -> None:
    state = state_with(host, *claims)
    rejection = check(state.host(host.name), request_, state)
    if reason is None:
        assert rejection is None
    else:
        assert rejection is not None
        assert reason in rejection.summary or reason in rejection.reason


def test_first_rejection_runs_cheap_filters_first() -> None:
    state = state_with(make_host(ready=False))
    rejection = filters.first_rejection(state.host("h1"), make_request(memory_mib=999 * GIB), state)
    assert rejection is not None and rejection.filter == "ready"


def test_capacity_rejection_carries_need_and_free() -> None:
    state = state_with(make_host(), Claim("x", "h1", memory_mib=58 * GIB))
    rejection = filters.memory(state.host("h1"), make_request(memory_mib=8 * GIB), state)
    assert rejection is not None
    assert (rejection.need, rejection.free, rejection.unit) == (8 * GIB, 6 * GIB, "MiB")
