"""Hypothesis strategies for random small hosts and requests."""

from __future__ import annotations

from hypothesis import strategies as st

from kubevisor.core.hypervisors import Feature
from kubevisor.core.placement.model import (
    GroupPolicy,
    HostSnapshot,
    RatioOverrides,
    Request,
    ThreadPolicy,
)

from .builders import GIB, make_host, make_request

POLICIES = list(GroupPolicy)
IMAGES = [c * 64 for c in "abc"]
SHARED = [None, "nfs", "ceph"]
# Mostly kvm, so the NUMA and pinning paths stay well exercised.
TYPES = ["kvm", "kvm", "kvm", "qemu", "lxc", "vmware"]
REQUIRED_TYPES = [frozenset(), frozenset(), frozenset({"lxc"}), frozenset({"kvm", "qemu"})]
SPEC_FEATURES = [Feature.UEFI, Feature.DISKS, Feature.CPU_TUNE, Feature.NETWORKS]


@st.composite
def hosts(draw: st.DrawFn, name: str = "h") -> HostSnapshot:
    cells = draw(st.integers(1, 3))
    cores = draw(st.integers(1, 4))
    threads = draw(st.sampled_from([1, 2]))
    every = cells * cores * threads
    dedicated = draw(st.sampled_from(["none", "all", "half", "random"]))
    chosen: str | frozenset[int] = dedicated
    if dedicated == "random":
        chosen = frozenset(draw(st.sets(st.integers(0, every - 1))))
    pages = draw(st.sampled_from([None, {2048: 1024}, {2048: 512, 1048576: 2}]))
    # Pages the agent reports in use outside kubevisor, per size and cell.
    outside = draw(st.sampled_from([0, 0, 300]))
    return make_host(
        name,
        cells=cells,
        cores=cores,
        threads=threads,
        cell_memory_mib=draw(st.sampled_from([2, 4, 8])) * GIB,
        dedicated=chosen,
        hugepages=pages,
        hugepages_free={size: max(count - outside, 0) for size, count in (pages or {}).items()},
        disk_mib=draw(st.sampled_from([10, 40])) * GIB,
        ratios=RatioOverrides(
            cpu=draw(st.sampled_from([None, 1.0, 2.0, 16.0])),
            memory=draw(st.sampled_from([None, 1.0, 1.5])),
        ),
        reserved_memory_mib=draw(st.sampled_from([0, 512])),
        images=draw(st.frozensets(st.sampled_from(IMAGES))),
        shared_storage=draw(st.sampled_from(SHARED)),
        hypervisor_type=draw(st.sampled_from(TYPES)),
    )


@st.composite
def requests(draw: st.DrawFn, name: str = "vm") -> Request:
    vcpus = draw(st.integers(1, 6))
    dedicated = draw(st.booleans())
    memory = draw(st.sampled_from([512, 1024, 2048, 3072]))
    split = draw(st.sampled_from([0, 1, 2])) if vcpus >= 2 else 0
    cells: tuple[tuple[tuple[int, ...], int], ...] = ()
    if split == 2:
        half = vcpus // 2
        cells = (
            (tuple(range(half)), memory // 2),
            (tuple(range(half, vcpus)), memory - memory // 2),
        )
    elif split == 1:
        cells = ((tuple(range(vcpus)), memory),)
    group = draw(st.sampled_from([None, "g1", "g2", "g3"]))
    return make_request(
        name,
        vcpus=vcpus,
        memory_mib=memory,
        disk_mib=draw(st.sampled_from([0, GIB, 5 * GIB])),
        dedicated=dedicated,
        thread_policy=draw(st.sampled_from(list(ThreadPolicy))),
        emulator=dedicated and draw(st.booleans()),
        cells=cells,
        hugepage_kib=draw(st.sampled_from([None, None, 2048, 1048576])),
        group=group,
        # Members may disagree (g2 on policy, g1 on maxPerHost): placement holds each
        # group to the rule its members already hold.
        policy=draw(st.sampled_from(POLICIES)) if group == "g2" else GroupPolicy.ANTI_AFFINITY,
        max_per_host=draw(st.integers(1, 3)) if group == "g1" else 1,
        images=draw(st.frozensets(st.sampled_from(IMAGES), max_size=2)),
        shared_storage=draw(st.sampled_from(SHARED)),
        hypervisor_types=draw(st.sampled_from(REQUIRED_TYPES)),
        features=draw(st.frozensets(st.sampled_from(SPEC_FEATURES), max_size=2)),
    )
