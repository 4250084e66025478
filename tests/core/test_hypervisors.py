"""core/hypervisors.py: what a spec asks of its hypervisor, and which types do it."""

from __future__ import annotations

from typing import Any

import pytest

from kubevisor.api.virtualmachine import VirtualMachineSpec
from kubevisor.core import hypervisors
from kubevisor.core.hypervisors import Feature

F = Feature


def spec(**fields: Any) -> VirtualMachineSpec:
    return VirtualMachineSpec.model_validate({"memory": {"size": "64Mi"}, **fields})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, set(), id="minimal-asks-only-for-a-kernel"),
        pytest.param(
            {"evictionStrategy": "LiveMigrate"}, set(), id="live-migrate-eviction-is-no-feature"
        ),
        pytest.param({"cpu": {"vcpus": 2, "policy": "dedicated"}}, {F.DEDICATED_CPUS}, id="pinned"),
        pytest.param(
            {"cpu": {"vcpus": 2}, "numa": {"cells": [{"cpus": [0, 1], "memory": "64Mi"}]}},
            {F.GUEST_NUMA},
            id="guest-numa",
        ),
        pytest.param(
            {"memory": {"size": "64Mi", "hugepages": {"pageSize": "2Mi"}}},
            {F.HUGEPAGES},
            id="hugepages",
        ),
        pytest.param({"memory": {"size": "64Mi", "balloon": {}}}, {F.MEMORY_BALLOON}, id="balloon"),
        pytest.param({"cpu": {"model": "host-model"}}, {F.CPU_MODEL}, id="cpu-model"),
        pytest.param({"cpu": {"disabledFeatures": ["avx"]}}, {F.CPU_FLAGS}, id="cpu-flags"),
        pytest.param({"cpu": {"vcpus": 2, "sockets": 2}}, {F.CPU_TOPOLOGY}, id="cpu-topology"),
        pytest.param({"cpu": {"tune": {"shares": 512}}}, {F.CPU_TUNE}, id="cpu-tune"),
        pytest.param(
            {"firmware": {"type": "uefi", "secureBoot": True}},
            {F.UEFI, F.SECURE_BOOT},
            id="uefi-secure-boot",
        ),
        pytest.param({"firmware": {"type": "bios"}}, set(), id="explicit-bios-is-no-feature"),
        pytest.param({"boot": {"kernel": "/boot/vmlinuz"}}, {F.KERNEL_BOOT}, id="kernel-boot"),
        pytest.param(
            {"disks": [{"name": "root", "size": "1Gi"}], "cloudInit": {"userData": "#x"}},
            {F.DISKS, F.CLOUD_INIT},
            id="disks-and-cloud-init",
        ),
        pytest.param(
            {"networks": [{"name": "n", "type": "bridge", "source": "br0"}]},
            {F.NETWORKS},
            id="bridge-nic",
        ),
        pytest.param({"networks": [{"name": "n"}]}, {F.NETWORKS, F.USER_NETWORKING}, id="user-nic"),
        pytest.param(
            {"networks": [{"name": "n", "type": "network", "source": "x", "multiqueue": True}]},
            {F.NETWORKS, F.MULTIQUEUE},
            id="multiqueue-nic",
        ),
        pytest.param(
            {"devices": {"pci": [{"alias": "vf"}]}}, {F.PCI_PASSTHROUGH}, id="pci-passthrough"
        ),
    ],
)
def test_requested_features(fields: dict[str, Any], expected: set[Feature]) -> None:
    # Each is a VM, not a container: it boots a guest kernel.
    assert hypervisors.requested(spec(**fields)) == {F.GUEST_KERNEL, *expected}


def test_a_container_asks_for_containers_not_a_guest_kernel() -> None:
    container = {"rootfs": "/srv/web"}
    asked = hypervisors.requested(spec(container=container, cpu={"tune": {"shares": 512}}))
    assert asked == {F.CONTAINER, F.CPU_TUNE}
    assert hypervisors.missing("lxc", asked) == frozenset()
    assert hypervisors.missing("qemu", asked) == {F.CONTAINER}


def test_only_lxc_runs_containers_and_lxc_runs_nothing_else() -> None:
    runs_containers = {
        t for t, features in hypervisors.SUPPORTED.items() if F.CONTAINER in features
    }
    boots_kernels = {
        t for t, features in hypervisors.SUPPORTED.items() if F.GUEST_KERNEL in features
    }
    assert runs_containers == {"lxc"}
    assert boots_kernels == {"kvm", "qemu", "vmware", "test"}


def test_every_feature_has_words_and_every_reported_type_a_row() -> None:
    assert set(hypervisors.WORDS) == set(Feature)
    assert set(hypervisors.SUPPORTED) == {"kvm", "qemu", "lxc", "vmware", "test"}


@pytest.mark.parametrize(
    ("hypervisor_type", "live"),
    [("kvm", True), ("qemu", True), ("vmware", True), ("test", True), ("lxc", False), ("", True)],
)
def test_live_migration(hypervisor_type: str, live: bool) -> None:
    assert hypervisors.can_live_migrate(hypervisor_type) is live


def test_lxc_lacks_what_needs_a_guest_kernel_and_keeps_cgroup_limits() -> None:
    wanted = {F.UEFI, F.GUEST_NUMA, F.DEDICATED_CPUS, F.CPU_TUNE, F.NETWORKS}
    assert hypervisors.missing("lxc", wanted) == {F.UEFI, F.GUEST_NUMA, F.DEDICATED_CPUS}
    assert hypervisors.missing("kvm", wanted) == frozenset()
    assert hypervisors.missing("xen", wanted) == frozenset()  # not a reported type: not judged


def test_describe_names_features_in_table_order_with_their_fields() -> None:
    assert hypervisors.describe({F.UEFI}) == "UEFI firmware (spec.firmware)"
    assert hypervisors.describe({F.GUEST_NUMA, F.UEFI, F.LIVE_MIGRATION}) == (
        "live migration, guest NUMA cells (spec.numa) or UEFI firmware (spec.firmware)"
    )
