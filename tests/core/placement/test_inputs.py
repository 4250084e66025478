"""CRD models -> placement values -> VM status -> claims again (placement.inputs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.network import NetworkSpec
from kubevisor.api.virtualmachine import VirtualMachine, VirtualMachineStatus
from kubevisor.core.hypervisors import Feature
from kubevisor.core.placement import inputs, scheduler
from kubevisor.core.placement.model import (
    Capability,
    CpuPolicy,
    GroupPolicy,
    PciDevice,
    PciRequest,
    Storage,
    ThreadPolicy,
)
from kubevisor.core.placement.scheduler import Decision, NoFit
from kubevisor.core.placement.state import PlacementState

EXAMPLES = Path(__file__).resolve().parents[3] / "deploy" / "examples" / "placement"


def load() -> tuple[list[HypervisorHost], list[VirtualMachine]]:
    hosts = [
        HypervisorHost.model_validate(d)
        for d in yaml.safe_load_all((EXAMPLES / "hosts.yaml").read_text())
    ]
    vms = [
        VirtualMachine.model_validate(d)
        for d in yaml.safe_load_all((EXAMPLES / "vms.yaml").read_text())
    ]
    return hosts, vms


def test_host_snapshot_from_crd() -> None:
    hosts, _ = load()
    snap = inputs.host_snapshot(hosts[2])
    assert snap.name == "hv-c" and snap.ready and snap.schedulable
    assert snap.dedicated_cpus == frozenset({0, 1, 2, 3, 8, 9, 10, 11})
    assert snap.shared_cpus == frozenset({4, 5, 6, 7, 12, 13, 14, 15})
    assert snap.memory_mib == 64 * 1024 and snap.reserved_memory_mib == 1024
    assert snap.ratios.cpu == 8.0 and snap.ratios.memory is None
    assert snap.numa_cells[0].hugepage_total(2048) == 2048
    assert snap.numa_cells[1].cores[0] == (8, 9)
    assert snap.has_smt and snap.hypervisor_type == "kvm"
    assert not inputs.host_snapshot(hosts[3]).schedulable


def test_request_from_crd() -> None:
    _, vms = load()
    by_name = {vm.metadata["name"]: inputs.request(vm) for vm in vms}
    db = by_name["db-0"]
    assert db.cpu_policy == CpuPolicy.DEDICATED and db.thread_policy == ThreadPolicy.ISOLATE
    assert db.group is not None and db.group.name == "demo/db"
    assert db.group.policy == GroupPolicy.ANTI_AFFINITY and db.group.max_per_host == 1
    assert by_name["hugepages"].hugepage_kib == 2048
    assert [len(c.vcpus) for c in by_name["numa-wide"].numa_cells] == [2, 2]
    assert by_name["web-0"].disk_mib == 20 * 1024
    assert by_name["zone-a"].host_selector == {"kubevisor.io/zone": "a"}


def test_status_round_trip_rebuilds_identical_claims() -> None:
    hosts, vms = load()
    snaps = [inputs.host_snapshot(h) for h in hosts]
    state = PlacementState.rebuild(snaps, [])
    bound = []
    for vm in vms[1:]:
        decision = scheduler.place(state, inputs.request(vm))
        if isinstance(decision, Decision):
            status = VirtualMachineStatus(
                host=decision.host, placement=inputs.placement_status(decision.numa)
            )
            bound.append(vm.model_copy(update={"status": status}))
    by_name = {s.name: s for s in snaps}
    claims = [
        inputs.claim(vm, by_name[vm.status.host]) for vm in bound if vm.status and vm.status.host
    ]
    again = PlacementState.rebuild(snaps, [c for c in claims if c is not None])
    assert not again.conflicts
    for snap in snaps:
        assert again.usage(snap.name) == state.usage(snap.name)


TUNED_HOST = {
    "metadata": {"name": "hv-t"},
    "spec": {"pciPassthrough": [{"vendorId": "8086", "productId": "154c", "alias": "vf"}]},
    "status": {
        "capacity": {"cpu": 4, "memory": "8Gi", "disk": "100Gi"},
        "cpu": {"model": "Skylake-Server", "vendor": "Intel", "features": ["vmx"]},
        "capabilities": {
            "uefi": True,
            "secureBoot": False,
            "securityDriver": "apparmor",
            "seccompSandbox": None,
        },
        "storage": {
            "capacity": "100Gi",
            "available": "60Gi",
            "used": "10Gi",
            "provisioned": "40Gi",
        },
        "pciDevices": [
            {"address": "0000:3b:02.0", "vendorId": "8086", "productId": "154c", "alias": "vf"},
            {
                "address": "0000:af:02.0",
                "vendorId": "8086",
                "productId": "154c",
                "alias": "vf",
                "numaCell": 1,
            },
        ],
    },
}

TUNED_VM = {
    "metadata": {"name": "tuned", "namespace": "demo"},
    "spec": {
        "cpu": {"vcpus": 2, "model": "host-passthrough"},
        "memory": {"size": "1Gi"},
        "firmware": {"type": "uefi", "secureBoot": True},
        "security": {"requireConfinement": True, "requireSeccompSandbox": True},
        "devices": {"pci": [{"alias": "vf", "count": 2}]},
    },
}


def test_host_snapshot_carries_capabilities_storage_and_devices() -> None:
    snap = inputs.host_snapshot(HypervisorHost.model_validate(TUNED_HOST))
    assert snap.capabilities == frozenset({Capability.UEFI, Capability.CONFINEMENT})
    assert snap.storage == Storage(
        total_mib=100 * 1024,
        available_mib=60 * 1024,
        overlays_mib=10 * 1024,
        provisioned_mib=40 * 1024,
    )
    assert snap.pci_devices == (
        PciDevice("0000:3b:02.0", "vf", None),
        PciDevice("0000:af:02.0", "vf", 1),
    )
    assert (snap.cpu_vendor, snap.cpu_model) == ("Intel", "Skylake-Server")


def test_host_without_a_security_driver_offers_no_confinement() -> None:
    raw = yaml.safe_load(yaml.safe_dump(TUNED_HOST))
    raw["status"]["capabilities"]["securityDriver"] = "none"
    snap = inputs.host_snapshot(HypervisorHost.model_validate(raw))
    assert Capability.CONFINEMENT not in snap.capabilities


def test_request_carries_firmware_security_cpu_mode_and_pci() -> None:
    wanted = inputs.request(VirtualMachine.model_validate(TUNED_VM))
    assert wanted.capabilities == frozenset(Capability)
    assert wanted.cpu_mode == "host-passthrough"
    assert wanted.pci == (PciRequest("vf", 2),)


def test_named_cpu_model_goes_only_where_the_host_lists_it_usable() -> None:
    raw = yaml.safe_load(yaml.safe_dump(TUNED_HOST))
    raw["status"]["cpu"]["usableModels"] = ["Nehalem", "qemu64"]
    lists = dataclasses.replace(
        inputs.host_snapshot(HypervisorHost.model_validate(raw)), ready=True
    )
    assert lists.usable_cpu_models == frozenset({"Nehalem", "qemu64"})
    silent = dataclasses.replace(
        inputs.host_snapshot(HypervisorHost.model_validate(TUNED_HOST)), ready=True
    )
    assert silent.usable_cpu_models is None  # an agent from before the list

    def vm(model: str) -> VirtualMachine:
        return VirtualMachine.model_validate(
            {
                "metadata": {"name": "named", "namespace": "demo"},
                "spec": {"cpu": {"vcpus": 1, "model": model}, "memory": {"size": "1Gi"}},
            }
        )

    assert inputs.request(vm("qemu64")).named_cpu_model == "qemu64"
    assert inputs.request(vm("host-model")).named_cpu_model is None
    state = PlacementState.rebuild([lists], [])
    assert isinstance(scheduler.place(state, inputs.request(vm("qemu64"))), Decision)
    refused = scheduler.place(state, inputs.request(vm("Skylake-Client")))
    assert isinstance(refused, NoFit)
    assert "1 cannot run CPU model Skylake-Client" in refused.message, refused.message
    # Hosts that report no list are not judged on it (libvirt refuses at start instead).
    anywhere = PlacementState.rebuild([silent], [])
    assert isinstance(scheduler.place(anywhere, inputs.request(vm("Skylake-Client"))), Decision)


def test_pci_claims_round_trip_through_the_vm_status() -> None:
    host = dataclasses.replace(
        inputs.host_snapshot(HypervisorHost.model_validate(TUNED_HOST)), ready=True
    )
    state = PlacementState.rebuild([host], [])
    raw = yaml.safe_load(yaml.safe_dump(TUNED_VM))
    raw["spec"].pop("firmware")
    raw["spec"].pop("security")
    vm = VirtualMachine.model_validate(raw)
    decision = scheduler.place(state, inputs.request(vm))
    assert isinstance(decision, Decision)
    placement = inputs.placement_status(decision.numa)
    assert placement is not None and placement.cells == []
    assert [d.address for d in placement.pci_devices] == ["0000:3b:02.0", "0000:af:02.0"]
    vm.status = VirtualMachineStatus(host="hv-t", placement=placement)
    assert inputs.claim(vm, host) == decision.claim


IMAGE_A, IMAGE_B = "a" * 64, "b" * 64


def test_host_snapshot_carries_cached_images_and_shared_storage() -> None:
    raw = yaml.safe_load(yaml.safe_dump(TUNED_HOST))
    raw["spec"] = {"sharedStorage": {"name": "nfs-a", "path": "/srv/vms"}}
    raw["status"]["images"] = [
        {"sha256": IMAGE_A, "size": "2Gi", "inUse": 1},
        {"sha256": IMAGE_B, "size": "300Mi", "shared": True},
    ]
    snap = inputs.host_snapshot(HypervisorHost.model_validate(raw))
    assert snap.images == frozenset({IMAGE_A, IMAGE_B})
    assert snap.shared_storage == "nfs-a"
    bare = inputs.host_snapshot(HypervisorHost.model_validate(TUNED_HOST))
    assert (bare.images, bare.shared_storage) == (frozenset(), None)


def _source(digest: str) -> dict[str, object]:
    return {"url": f"http://images.example/{digest[:4]}.qcow2", "sha256": digest}


@pytest.mark.parametrize(
    ("storage", "shared"),
    [
        pytest.param(None, None, id="not-created-yet"),
        pytest.param({"location": "Local", "host": "h1"}, None, id="local-disks"),
        pytest.param(
            {"location": "Shared", "sharedStorage": "nfs-a", "host": "h1"},
            "nfs-a",
            id="shared-disks",
        ),
    ],
)
def test_request_carries_source_images_and_the_storage_its_disks_live_in(
    storage: dict[str, str] | None, shared: str | None
) -> None:
    raw = yaml.safe_load(yaml.safe_dump(TUNED_VM))
    raw["spec"]["disks"] = [
        {"name": "root", "source": _source(IMAGE_A)},
        {"name": "data", "source": _source(IMAGE_B), "size": "10Gi"},
        {"name": "again", "source": _source(IMAGE_A)},
        {"name": "scratch", "size": "1Gi"},
    ]
    if storage is not None:
        raw["status"] = {"storage": storage}
    wanted = inputs.request(VirtualMachine.model_validate(raw))
    assert wanted.images == frozenset({IMAGE_A, IMAGE_B})
    assert wanted.shared_storage == shared


def _typed_host(name: str, hypervisor_type: str) -> HypervisorHost:
    return HypervisorHost.model_validate(
        {
            "metadata": {"name": name},
            "status": {
                "hypervisor": {"type": hypervisor_type},
                "capacity": {"cpu": 4, "memory": "8Gi", "disk": "100Gi"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )


def _vm(name: str, **spec: object) -> VirtualMachine:
    return VirtualMachine.model_validate(
        {
            "metadata": {"name": name, "namespace": "demo"},
            "spec": {"memory": {"size": "1Gi"}, **spec},
        }
    )


def test_request_carries_required_hypervisor_types_and_spec_features() -> None:
    assert inputs.request(_vm("one", hypervisor={"type": "lxc"})).hypervisor_types == {"lxc"}
    either = _vm("either", hypervisor={"types": ["kvm", "qemu"]})
    assert inputs.request(either).hypervisor_types == {"kvm", "qemu"}
    assert inputs.request(_vm("any")).hypervisor_types == frozenset()
    uefi = inputs.request(_vm("uefi", firmware={"type": "uefi"}))
    assert uefi.features == {Feature.UEFI, Feature.GUEST_KERNEL}


def test_a_mixed_cluster_places_each_vm_on_a_type_that_can_run_it() -> None:
    hosts = [inputs.host_snapshot(_typed_host(n, t)) for n, t in (("q", "qemu"), ("ct", "lxc"))]
    state = PlacementState.rebuild(hosts, [])

    def place(vm: VirtualMachine) -> str:
        decision = scheduler.place(state, inputs.request(vm))
        return decision.host if isinstance(decision, Decision) else decision.message

    # The default evictionStrategy (LiveMigrate) asks nothing of the type: a drain moves
    # the container cold instead.
    container = {"rootfs": "/srv/ct"}
    assert place(_vm("ct", hypervisor={"type": "lxc"}, container=container)) == "ct"
    assert place(_vm("any-ct", container=container)) == "ct"
    assert place(_vm("machine", hypervisor={"type": "qemu"})) == "q"
    assert place(_vm("any-machine")) == "q"
    assert place(_vm("with-disk", disks=[{"name": "root", "size": "1Gi"}])) == "q"
    uefi_ct = _vm(
        "uefi-ct", hypervisor={"type": "lxc"}, container=container, firmware={"type": "uefi"}
    )
    assert place(uefi_ct) == (
        "0/2 hosts fit: 1 hypervisor type is not lxc, 1 lxc has no UEFI firmware (spec.firmware)"
    )
    assert place(_vm("lxc-machine", hypervisor={"type": "lxc"})) == (
        "0/2 hosts fit: 1 hypervisor type is not lxc, "
        "1 lxc has no guest kernel, which a VM without spec.container boots"
    )


def _eight_cpu_host(*, cells: bool, **spec: object) -> HypervisorHost:
    status: dict[str, object] = {
        "capacity": {"cpu": 8, "memory": "64Gi", "disk": "100Gi"},
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    if cells:
        status["numaCells"] = [{"id": 0, "cpus": list(range(8)), "memory": "64Gi"}]
    return HypervisorHost.model_validate(
        {"metadata": {"name": "h8"}, "spec": spec, "status": status}
    )


def test_a_shared_set_beyond_the_hosts_cpus_places_nothing() -> None:
    # The issue: cpuSharedSet 0-63 on an 8-CPU host let two 64-vCPU VMs be placed.
    snap = inputs.host_snapshot(_eight_cpu_host(cells=True, cpuSharedSet="0-63"))
    assert snap.cpu_set_errors == (
        "spec.cpuSharedSet names CPUs 8-63 the host does not have (it has 0-7)",
    )
    state = PlacementState.rebuild([snap], [])
    for name in ("a", "b"):
        refused = scheduler.place(state, inputs.request(_vm(name, cpu={"vcpus": 64})))
        assert isinstance(refused, NoFit)
        assert refused.message == (
            "0/1 host fit: 1 invalid CPU sets (see the host's Schedulable condition)"
        )
    assert not state.claims()


def test_without_reported_cells_no_vm_gets_more_vcpus_than_the_host_has_cpus() -> None:
    snap = inputs.host_snapshot(_eight_cpu_host(cells=False, cpuSharedSet="0-63"))
    assert snap.cpu_set_errors == ()  # no CPU list to hold the set against
    state = PlacementState.rebuild([snap], [])
    refused = scheduler.place(state, inputs.request(_vm("big", cpu={"vcpus": 64})))
    assert isinstance(refused, NoFit)
    assert refused.message == (
        "0/1 host fit: 1 more vCPUs than the host has CPUs (need 64, best has 8 in all)"
    )
    assert isinstance(
        scheduler.place(state, inputs.request(_vm("fits", cpu={"vcpus": 8}))), Decision
    )


def test_huge_pages_the_agent_reports_in_use_are_not_handed_out() -> None:
    # 1024 pages of 2Mi, 924 of them taken outside kubevisor: 100 (200Mi) are left.
    host = HypervisorHost.model_validate(
        {
            "metadata": {"name": "hp"},
            "status": {
                "capacity": {"cpu": 4, "memory": "8Gi", "disk": "100Gi"},
                "numaCells": [
                    {
                        "id": 0,
                        "cpus": [0, 1, 2, 3],
                        "memory": "8Gi",
                        "hugepages": [{"pageSize": "2Mi", "total": 1024, "free": 100}],
                    }
                ],
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )
    state = PlacementState.rebuild([inputs.host_snapshot(host)], [])
    big = _vm("big", memory={"size": "1Gi", "hugepages": {"pageSize": "2Mi"}})
    refused = scheduler.place(state, inputs.request(big))
    assert isinstance(refused, NoFit)
    assert refused.message == (
        "0/1 host fit: 1 insufficient 2Mi huge pages (need 1Gi, best has 200Mi free)"
    )
    small = _vm("small", memory={"size": "200Mi", "hugepages": {"pageSize": "2Mi"}})
    assert isinstance(scheduler.place(state, inputs.request(small)), Decision)


def test_host_networks_come_from_the_hosts_spec_and_the_vms_sources() -> None:
    """Issue 16 class 5: what the admin offers and what the VM names, for `host_networks`."""
    raw = yaml.safe_load(yaml.safe_dump(TUNED_HOST))
    raw["spec"] = {"hostNetworks": ["br0", "default"]}
    assert inputs.host_snapshot(HypervisorHost.model_validate(raw)).host_networks == {
        "br0",
        "default",
    }
    assert inputs.host_snapshot(HypervisorHost.model_validate(TUNED_HOST)).host_networks == set()
    vm = yaml.safe_load(yaml.safe_dump(TUNED_VM))
    vm["spec"]["networks"] = [
        {"name": "a", "type": "network", "source": "default"},
        {"name": "b", "type": "bridge", "source": "br0"},
        {"name": "c", "source": "ignored-by-a-user-nic"},
        {"name": "d", "network": "blue"},
        {"name": "e", "type": "bridge", "source": "br0"},
    ]
    request = inputs.request(VirtualMachine.model_validate(vm))
    assert request.host_networks == (("bridge", "br0"), ("network", "default"))


def test_networks_give_the_physical_networks_and_overlays_a_vm_needs() -> None:
    raw = yaml.safe_load(yaml.safe_dump(TUNED_HOST))
    raw["spec"] = {"networkMappings": [{"physicalNetwork": "physnet1", "interface": "eth1"}]}
    raw["status"]["network"] = {"tunnelEndpoint": "192.0.2.11"}
    snap = inputs.host_snapshot(HypervisorHost.model_validate(raw))
    assert (snap.network_mappings, snap.tunnel_endpoint) == ({"physnet1"}, "192.0.2.11")
    bare = inputs.host_snapshot(HypervisorHost.model_validate(TUNED_HOST))
    assert (bare.network_mappings, bare.tunnel_endpoint) == (set(), None)

    subnet = {"cidr": "10.0.0.0/24"}
    networks = {
        "team/vlan": NetworkSpec.model_validate(
            {"type": "provider", "provider": {"physicalNetwork": "physnet1"}, "subnet": subnet}
        ),
        "team/blue": NetworkSpec.model_validate({"type": "overlay", "subnet": subnet}),
        "other/flat": NetworkSpec.model_validate(
            {"type": "provider", "provider": {"physicalNetwork": "other"}, "subnet": subnet}
        ),
    }
    vm = yaml.safe_load(yaml.safe_dump(TUNED_VM))
    vm["metadata"]["namespace"] = "team"
    vm["spec"]["networks"] = [
        {"name": "a", "network": "vlan"},
        {"name": "b", "network": "flat"},  # another namespace's: not this VM's
        {"name": "c", "network": "missing"},
    ]
    request = inputs.request(VirtualMachine.model_validate(vm), networks=networks)
    assert (request.physical_networks, request.overlay) == ({"physnet1"}, False)
    vm["spec"]["networks"].append({"name": "d", "network": "blue"})
    request = inputs.request(VirtualMachine.model_validate(vm), networks=networks)
    assert (request.physical_networks, request.overlay) == ({"physnet1"}, True)
    assert inputs.request(VirtualMachine.model_validate(vm)).physical_networks == set()
