"""One table per filter (placement.filters): each case passes or names its reason."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubevisor.core.hypervisors import Feature
from kubevisor.core.placement import filters
from kubevisor.core.placement.model import (
    Capability,
    Claim,
    GroupPolicy,
    HostSnapshot,
    NumaFit,
    PciClaim,
    PciDevice,
    RatioOverrides,
    Request,
    ServerGroup,
    Storage,
)
from kubevisor.core.placement.state import PlacementState

from .builders import GIB, make_host, make_request

H = make_host


def state_with(host: HostSnapshot, *claims: Claim) -> PlacementState:
    return PlacementState.rebuild([host, make_host("other")], claims)


def member(vm: str, host: str, group: str, policy: GroupPolicy) -> Claim:
    return Claim(vm=vm, host=host, vcpus=1, memory_mib=GIB, group=ServerGroup(group, policy))


AA, AFF = GroupPolicy.ANTI_AFFINITY, GroupPolicy.AFFINITY
UEFI, SB = Capability.UEFI, Capability.SECURE_BOOT
SECCOMP, CONFINED = Capability.SECCOMP_SANDBOX, Capability.CONFINEMENT
PASSTHROUGH = "host-passthrough"
TCG = frozenset({"qemu64", "Nehalem", "Penryn"})


def running_on(host: str, vm: str = "default/vm") -> Claim:
    """The VM's own claim: it runs on `host` (a migration's source)."""
    return Claim(vm=vm, host=host, vcpus=2, memory_mib=2 * GIB)


def storage(total: int, available: int, overlays: int = 0, provisioned: int = 0) -> Storage:
    return Storage(
        total_mib=total * GIB,
        available_mib=available * GIB,
        overlays_mib=overlays * GIB,
        provisioned_mib=provisioned * GIB,
    )


def vfs(*cells: int | None, alias: str = "vf") -> tuple[PciDevice, ...]:
    return tuple(PciDevice(f"0000:3b:02.{i}", alias, cell) for i, cell in enumerate(cells))


def holding(vm: str, *addresses: str, alias: str = "vf") -> Claim:
    fit = NumaFit(cells=(), pci=tuple(PciClaim(alias, a) for a in addresses))
    return Claim(vm=vm, host="h1", vcpus=1, memory_mib=GIB, numa=fit)


def ruled(vm: str, policy: GroupPolicy, max_per_host: int = 1) -> Claim:
    """A member of group db on host other, holding `policy` (and maxPerHost)."""
    group = ServerGroup("db", policy, max_per_host)
    return Claim(vm=vm, host="other", vcpus=1, memory_mib=GIB, group=group)


SOFT_AA, SOFT_AFF = GroupPolicy.SOFT_ANTI_AFFINITY, GroupPolicy.SOFT_AFFINITY

CASES = [
    # -- one rule per server group ---------------------------------------------------------
    pytest.param(filters.group_policy, H(), make_request(), (), None, id="group-policy-no-group"),
    pytest.param(
        filters.group_policy,
        H(),
        make_request(group="db", policy=SOFT_AA),
        (),
        None,
        id="group-policy-first-member-sets-the-rule",
    ),
    pytest.param(
        filters.group_policy,
        H(),
        make_request(group="db", max_per_host=2),
        (ruled("db-0", AA, 2), ruled("db-1", AA, 2)),
        None,
        id="group-policy-member-agrees",
    ),
    pytest.param(
        filters.group_policy,
        H(),
        make_request(group="db", policy=SOFT_AA),
        (ruled("db-0", AA, 2),),
        'group "db" is anti-affinity with maxPerHost 2 (as member db-0 holds it), '
        "the VM asks soft-anti-affinity",
        id="group-policy-other-policy-refused",
    ),
    pytest.param(
        filters.group_policy,
        H(),
        make_request(group="db", max_per_host=5),
        (ruled("db-0", AA, 2), ruled("db-1", AA, 2)),
        'group "db" is anti-affinity with maxPerHost 2 (as member db-0 holds it), '
        "the VM asks anti-affinity with maxPerHost 5",
        id="group-policy-other-max-per-host-refused",
    ),
    pytest.param(
        filters.group_policy,
        H(),
        make_request(group="db", policy=AFF),
        (ruled("db-0", SOFT_AFF),),
        "is soft-affinity (as member db-0 holds it), the VM asks affinity",
        id="group-policy-soft-member-rules-a-hard-one-out",
    ),
    pytest.param(
        filters.group_policy,
        H(),
        make_request(group="db", policy=SOFT_AFF, max_per_host=3),
        (ruled("db-0", SOFT_AFF),),
        None,
        id="group-policy-max-per-host-counts-under-anti-affinity-only",
    ),
    pytest.param(
        filters.group_policy,
        H(),
        make_request("db-0", group="db", policy=SOFT_AA),
        (ruled("db-0", AA, 2),),
        None,
        id="group-policy-a-vm-never-conflicts-with-its-own-claim",
    ),
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
        make_request(required_cpu_model="Skylake-Server"),
        (),
        None,
        id="migration-target-compatible",
    ),
    pytest.param(
        filters.hypervisor_type,
        H(hypervisor_type="lxc"),
        make_request(),
        (),
        None,
        id="no-type-required-any-type",
    ),
    pytest.param(
        filters.hypervisor_type,
        H(),
        make_request(hypervisor_types=frozenset({"qemu"})),
        (),
        "host h1 runs kvm, the VM needs qemu",
        id="hypervisor-type-differs",
    ),
    pytest.param(
        filters.hypervisor_type,
        H(hypervisor_type="qemu"),
        make_request(hypervisor_types=frozenset({"kvm", "qemu"})),
        (),
        None,
        id="hypervisor-type-one-of-a-set",
    ),
    pytest.param(
        filters.hypervisor_type,
        H(hypervisor_type="vmware"),
        make_request(hypervisor_types=frozenset({"kvm", "qemu"})),
        (),
        "hypervisor type is not kvm or qemu",
        id="hypervisor-type-none-of-a-set",
    ),
    pytest.param(
        filters.hypervisor_type,
        H(hypervisor_type=""),
        make_request(hypervisor_types=frozenset({"kvm"})),
        (),
        "runs an unknown hypervisor",
        id="hypervisor-type-unreported",
    ),
    pytest.param(
        filters.hypervisor_capabilities,
        H(hypervisor_type="lxc"),
        make_request(features=frozenset({Feature.UEFI})),
        (),
        "lxc has no UEFI firmware (spec.firmware)",
        id="lxc-has-no-uefi",
    ),
    pytest.param(
        filters.hypervisor_capabilities,
        H(hypervisor_type="lxc"),
        make_request(dedicated=True, cells=(((0, 1), 2 * GIB),)),
        (),
        "lxc has no dedicated (pinned) vCPUs (spec.cpu.policy) or guest NUMA cells (spec.numa)",
        id="lxc-names-every-missing-feature",
    ),
    pytest.param(
        filters.hypervisor_capabilities,
        H(hypervisor_type="lxc"),
        make_request(features=frozenset({Feature.CPU_TUNE, Feature.NETWORKS})),
        (),
        None,
        id="lxc-has-cgroup-cpu-limits-and-veth-networks",
    ),
    pytest.param(
        filters.hypervisor_capabilities,
        H(hypervisor_type="vmware"),
        make_request(features=frozenset({Feature.DISKS})),
        (),
        "vmware has no block-device disks (spec.disks)",
        id="vmware-mapping-has-no-disks",
    ),
    pytest.param(
        filters.hypervisor_capabilities,
        H(hypervisor_type="qemu"),
        make_request(features=frozenset(Feature) - {Feature.LIVE_MIGRATION, Feature.CONTAINER}),
        (),
        None,
        id="qemu-does-every-vm-feature",
    ),
    pytest.param(
        filters.hypervisor_capabilities,
        H(hypervisor_type="qemu"),
        make_request(features=frozenset({Feature.CONTAINER})),
        (),
        "qemu has no system containers (spec.container)",
        id="qemu-runs-no-container",
    ),
    pytest.param(
        filters.hypervisor_capabilities,
        H(hypervisor_type="lxc"),
        make_request(features=frozenset({Feature.GUEST_KERNEL})),
        (),
        "lxc has no guest kernel, which a VM without spec.container boots",
        id="lxc-boots-no-guest-kernel",
    ),
    pytest.param(
        filters.hypervisor_capabilities,
        H(hypervisor_type="lxc"),
        make_request(features=frozenset({Feature.CONTAINER, Feature.CPU_TUNE})),
        (),
        None,
        id="lxc-runs-a-container",
    ),
    pytest.param(
        filters.hypervisor_capabilities,
        H(hypervisor_type=""),
        make_request(features=frozenset({Feature.UEFI})),
        (),
        None,
        id="unreported-type-not-judged",
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
    pytest.param(
        filters.cpu_sets,
        H(),
        make_request(),
        (),
        None,
        id="cpu-sets-usable",
    ),
    pytest.param(
        filters.cpu_sets,
        replace(H(), cpu_set_errors=("spec.cpuSharedSet names CPUs 16-63 the host lacks",)),
        make_request(),
        (),
        "host h1: spec.cpuSharedSet names CPUs 16-63 the host lacks",
        id="cpu-sets-invalid",
    ),
    pytest.param(
        filters.physical_cpus, H(), make_request(vcpus=16), (), None, id="physical-cpus-fit"
    ),
    pytest.param(
        filters.physical_cpus,
        replace(H(ratios=RatioOverrides(cpu=16.0)), shared_cpus=frozenset(range(64))),
        make_request(vcpus=17),
        (),
        "host h1 has 16 CPUs, the VM asks 17 vCPUs",
        id="physical-cpus-whatever-the-ratio-and-sets-say",
    ),
    pytest.param(
        filters.physical_cpus,
        H(dedicated="all"),
        make_request(vcpus=17, dedicated=True),
        (),
        "more vCPUs than the host has CPUs",
        id="physical-cpus-dedicated-too",
    ),
    pytest.param(filters.vcpus, H(), make_request(vcpus=16), (), None, id="vcpus-up-to-physical"),
    pytest.param(
        filters.vcpus,
        H(),
        make_request(vcpus=17),
        (),
        "host h1 has 16 shared CPUs in all, the VM asks 17",
        id="vcpus-never-above-the-shared-set-whatever-ratio",
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
        "more vCPUs than the host's shared CPUs",
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
        "host h1 has 64Gi memory in all, the VM asks 65Gi",
        id="memory-one-vm-never-above-physical",
    ),
    pytest.param(
        filters.disk,
        H(disk_mib=10 * GIB),
        make_request(disk_mib=20 * GIB),
        (),
        "more disk than the host has",
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
        "host h1 has 2048 free 2Mi pages (4Gi), needs 2560 (5Gi)",
        id="hugepages-too-few",
    ),
    pytest.param(
        filters.hugepages,
        H(hugepages={2048: 1024}, hugepages_free={2048: 24}),
        make_request(memory_mib=GIB, hugepage_kib=2048),
        (),
        "host h1 has 48 free 2Mi pages (96Mi), needs 512 (1Gi)",
        id="hugepages-used-outside-kubevisor-count-as-used",
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
    # -- capabilities the host reports --------------------------------------------------
    pytest.param(
        filters.capabilities,
        H(),
        make_request(),
        (),
        None,
        id="capabilities-nothing-required",
    ),
    pytest.param(
        filters.capabilities,
        H(capabilities=frozenset({UEFI})),
        make_request(capabilities=frozenset({UEFI})),
        (),
        None,
        id="capabilities-uefi-on-uefi-host",
    ),
    pytest.param(
        filters.capabilities,
        H(),
        make_request(capabilities=frozenset({UEFI})),
        (),
        "lacks uefi",
        id="capabilities-uefi-host-without-ovmf",
    ),
    pytest.param(
        filters.capabilities,
        H(capabilities=frozenset({UEFI})),
        make_request(capabilities=frozenset({UEFI, SB})),
        (),
        "lacks secure-boot",
        id="capabilities-secure-boot-needs-secure-ovmf",
    ),
    pytest.param(
        filters.capabilities,
        H(capabilities=frozenset({UEFI, SB, CONFINED})),
        make_request(capabilities=frozenset({SECCOMP, CONFINED})),
        (),
        "lacks seccomp-sandbox",
        id="capabilities-seccomp-not-reported",
    ),
    pytest.param(
        filters.capabilities,
        H(capabilities=frozenset({SECCOMP})),
        make_request(capabilities=frozenset({CONFINED})),
        (),
        "lacks confinement",
        id="capabilities-no-security-driver",
    ),
    # -- named CPU models only where libvirt marks them usable -----------------------------
    pytest.param(
        filters.cpu_model,
        H(usable_cpu_models=TCG),
        make_request(cpu_mode="Nehalem"),
        (),
        None,
        id="cpu-model-usable",
    ),
    pytest.param(
        filters.cpu_model,
        H(usable_cpu_models=TCG),
        make_request(cpu_mode="Skylake-Client"),
        (),
        "host h1 cannot run CPU model Skylake-Client (usable: Nehalem, Penryn, qemu64)",
        id="cpu-model-not-usable",
    ),
    pytest.param(
        filters.cpu_model,
        H(usable_cpu_models=TCG),
        make_request(cpu_mode="nehalem"),
        (),
        "cannot run CPU model nehalem",
        id="cpu-model-names-are-case-sensitive",
    ),
    pytest.param(
        filters.cpu_model,
        H(usable_cpu_models=frozenset()),
        make_request(cpu_mode="qemu64"),
        (),
        "(usable: none)",
        id="cpu-model-host-runs-no-named-models",
    ),
    pytest.param(
        filters.cpu_model,
        H(usable_cpu_models=frozenset(f"m{i:02}" for i in range(12))),
        make_request(cpu_mode="qemu64"),
        (),
        "(usable: m00, m01, m02, m03, m04, m05, m06, m07 and 4 more)",
        id="cpu-model-long-list-truncated",
    ),
    pytest.param(
        filters.cpu_model,
        H(),
        make_request(cpu_mode="Skylake-Client"),
        (),
        None,
        id="cpu-model-host-reports-no-list",
    ),
    pytest.param(
        filters.cpu_model,
        H(usable_cpu_models=frozenset()),
        make_request(cpu_mode=PASSTHROUGH),
        (),
        None,
        id="cpu-model-passthrough-unaffected",
    ),
    pytest.param(
        filters.cpu_model,
        H(usable_cpu_models=frozenset()),
        make_request(cpu_mode="host-model"),
        (),
        None,
        id="cpu-model-host-model-unaffected",
    ),
    pytest.param(
        filters.cpu_model,
        H(usable_cpu_models=frozenset()),
        make_request(),
        (),
        None,
        id="cpu-model-unset-unaffected",
    ),
    # -- host-passthrough guests move only between identical CPUs -------------------------
    pytest.param(
        filters.cpu_passthrough,
        H(cpu_model="EPYC"),
        make_request(cpu_mode=PASSTHROUGH),
        (),
        None,
        id="passthrough-first-placement-goes-anywhere",
    ),
    pytest.param(
        filters.cpu_passthrough,
        H(),
        make_request(cpu_mode=PASSTHROUGH),
        (running_on("other"),),
        None,
        id="passthrough-identical-cpu",
    ),
    pytest.param(
        filters.cpu_passthrough,
        H(cpu_model="Icelake-Server"),
        make_request(cpu_mode=PASSTHROUGH),
        (running_on("other"),),
        "CPU differs",
        id="passthrough-other-model",
    ),
    pytest.param(
        filters.cpu_passthrough,
        H(cpu_vendor="AMD"),
        make_request(cpu_mode=PASSTHROUGH),
        (running_on("other"),),
        "AMD Skylake-Server",
        id="passthrough-other-vendor",
    ),
    pytest.param(
        filters.cpu_passthrough,
        H(cpu_features=frozenset({"avx2"})),
        make_request(cpu_mode=PASSTHROUGH),
        (running_on("other"),),
        "lacks vmx",
        id="passthrough-target-lacks-feature",
    ),
    pytest.param(
        filters.cpu_passthrough,
        H(cpu_features=frozenset({"avx2", "vmx", "avx512f"})),
        make_request(cpu_mode=PASSTHROUGH),
        (running_on("other"),),
        "adds avx512f",
        id="passthrough-target-has-more-features",
    ),
    pytest.param(
        filters.cpu_passthrough,
        H(cpu_model="Icelake-Server"),
        make_request(cpu_mode="host-model"),
        (running_on("other"),),
        None,
        id="passthrough-host-model-may-differ",
    ),
    pytest.param(
        filters.cpu_passthrough,
        H(cpu_model="Icelake-Server"),
        make_request(cpu_mode=PASSTHROUGH),
        (running_on("h1"),),
        None,
        id="passthrough-own-host",
    ),
    # -- real space for thin overlays -----------------------------------------------------
    pytest.param(
        filters.disk_space,
        H(),
        make_request(disk_mib=20 * GIB),
        (),
        None,
        id="disk-space-host-reports-no-storage",
    ),
    pytest.param(
        filters.disk_space,
        H(storage=storage(100, 90)),
        make_request(disk_mib=90 * GIB),
        (),
        None,
        id="disk-space-fits-real-room",
    ),
    pytest.param(
        filters.disk_space,
        H(storage=storage(100, 40)),
        make_request(disk_mib=50 * GIB),
        (),
        "insufficient real disk space",
        id="disk-space-other-files-take-room",
    ),
    pytest.param(
        filters.disk_space,
        H(storage=storage(100, 60, overlays=10, provisioned=40)),
        make_request(disk_mib=30 * GIB),
        (),
        None,
        id="disk-space-overlays-counted-by-virtual-size-not-twice",
    ),
    pytest.param(
        filters.disk_space,
        H(storage=storage(100, 60, overlays=10, provisioned=40)),
        make_request(disk_mib=31 * GIB),
        (),
        "(40Gi provisioned, ratio 1): 30Gi free, needs 31Gi",
        id="disk-space-overlays-may-grow-to-virtual-size",
    ),
    pytest.param(
        filters.disk_space,
        H(storage=storage(100, 90), ratios=RatioOverrides(disk=2.0)),
        make_request(disk_mib=100 * GIB),
        (Claim("x", "h1", disk_mib=80 * GIB),),
        None,
        id="disk-space-overcommit-by-ratio",
    ),
    pytest.param(
        filters.disk_space,
        H(storage=storage(100, 100, provisioned=0)),
        make_request(disk_mib=30 * GIB),
        (Claim("x", "h1", disk_mib=80 * GIB),),
        "insufficient real disk space",
        id="disk-space-claims-not-yet-reported-count",
    ),
    pytest.param(
        filters.disk_space,
        H(storage=storage(100, 100), reserved_disk_mib=20 * GIB),
        make_request(disk_mib=90 * GIB),
        (),
        "insufficient real disk space",
        id="disk-space-reserved-subtracted",
    ),
    # -- PCI passthrough devices ----------------------------------------------------------
    pytest.param(filters.pci_devices, H(), make_request(), (), None, id="pci-nothing-requested"),
    pytest.param(
        filters.pci_devices,
        H(pci_devices=vfs(0, 1)),
        make_request(pci=(("vf", 2),)),
        (),
        None,
        id="pci-enough-devices-across-cells",
    ),
    pytest.param(
        filters.pci_devices,
        H(pci_devices=vfs(0, 1)),
        make_request(pci=(("vf", 2),)),
        (holding("x", "0000:3b:02.0"),),
        'insufficient PCI devices "vf"',
        id="pci-device-already-claimed",
    ),
    pytest.param(
        filters.pci_devices,
        H(pci_devices=vfs(0, alias="gpu")),
        make_request(pci=(("vf", 1),)),
        (),
        "0 free vf devices",
        id="pci-alias-not-offered",
    ),
    # -- host networks a tenant may name (issue 16 class 5) --------------------------------
    pytest.param(
        filters.host_networks, H(), make_request(), (), None, id="host-networks-none-named"
    ),
    pytest.param(
        filters.host_networks,
        replace(H(), host_networks=frozenset({"br0", "default"})),
        replace(make_request(), host_networks=(("bridge", "br0"), ("network", "default"))),
        (),
        None,
        id="host-networks-offered",
    ),
    pytest.param(
        filters.host_networks,
        H(),
        replace(make_request(), host_networks=(("bridge", "br0"),)),
        (),
        "host h1 does not offer bridge br0 to VMs",
        id="host-networks-bridge-not-offered",
    ),
    pytest.param(
        filters.host_networks,
        replace(H(), host_networks=frozenset({"br0"})),
        replace(make_request(), host_networks=(("bridge", "br0"), ("network", "mgmt"))),
        (),
        "does not offer libvirt network mgmt to VMs",
        id="host-networks-one-of-two-not-offered",
    ),
    # -- Networks: provider mappings and overlay tunnel endpoints --------------------------
    pytest.param(
        filters.physical_networks,
        replace(H(), network_mappings=frozenset({"physnet1", "physnet2"})),
        replace(make_request(), physical_networks=frozenset({"physnet1"})),
        (),
        None,
        id="physical-network-mapped",
    ),
    pytest.param(
        filters.physical_networks,
        replace(H(), network_mappings=frozenset({"physnet1"})),
        replace(make_request(), physical_networks=frozenset({"physnet1", "storage"})),
        (),
        "host h1 does not map physical network storage (spec.networkMappings)",
        id="physical-network-not-mapped",
    ),
    pytest.param(
        filters.tunnel_endpoint, H(), make_request(), (), None, id="no-overlay-no-tunnel-needed"
    ),
    pytest.param(
        filters.tunnel_endpoint,
        replace(H(), tunnel_endpoint="192.0.2.11"),
        replace(make_request(), overlay=True),
        (),
        None,
        id="overlay-on-a-tunnel-endpoint",
    ),
    pytest.param(
        filters.tunnel_endpoint,
        H(),
        replace(make_request(), overlay=True),
        (),
        "has no tunnel endpoint for overlay networks",
        id="overlay-without-a-tunnel-endpoint",
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


def test_an_lxc_host_explains_the_missing_feature_before_the_host_capability() -> None:
    # The host reports no UEFI either; the type's table is the reason worth reading.
    state = state_with(make_host(hypervisor_type="lxc"))
    request = make_request(features=frozenset({Feature.UEFI}), capabilities=frozenset({UEFI}))
    rejection = filters.first_rejection(state.host("h1"), request, state)
    assert rejection is not None and rejection.filter == "hypervisor_capabilities"


def test_capacity_rejection_carries_need_and_free() -> None:
    state = state_with(make_host(), Claim("x", "h1", memory_mib=58 * GIB))
    rejection = filters.memory(state.host("h1"), make_request(memory_mib=8 * GIB), state)
    assert rejection is not None
    assert (rejection.need, rejection.free, rejection.unit) == (8 * GIB, 6 * GIB, "MiB")
