"""CRD models -> placement values -> VM status -> claims again (placement.inputs)."""

from __future__ import annotations

from pathlib import Path

import yaml

from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.virtualmachine import VirtualMachine, VirtualMachineStatus
from kubevisor.core.placement import inputs, scheduler
from kubevisor.core.placement.model import CpuPolicy, GroupPolicy, ThreadPolicy
from kubevisor.core.placement.scheduler import Decision
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
