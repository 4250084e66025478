"""The wire vocabulary agrees with the models and the CRDs it names."""

from __future__ import annotations

from typing import Any

import pytest

from kubevisor.api import (
    crd,
    flavor,
    hypervisorhost,
    migrationjob,
    network,
    snapshot,
    snapshotschedule,
    virtualmachine,
    wire,
)


@pytest.mark.parametrize(
    ("resource", "module", "model"),
    [
        pytest.param(wire.VIRTUAL_MACHINES, virtualmachine, "VirtualMachine", id="vm"),
        pytest.param(wire.HYPERVISOR_HOSTS, hypervisorhost, "HypervisorHost", id="host"),
        pytest.param(wire.MIGRATION_JOBS, migrationjob, "MigrationJob", id="job"),
        pytest.param(wire.NETWORKS, network, "Network", id="network"),
        pytest.param(wire.FLAVORS, flavor, "VirtualMachineFlavor", id="flavor"),
        pytest.param(wire.SNAPSHOTS, snapshot, "VirtualMachineSnapshot", id="snapshot"),
        pytest.param(
            wire.SNAPSHOT_SCHEDULES,
            snapshotschedule,
            "VirtualMachineSnapshotSchedule",
            id="snapshot-schedule",
        ),
    ],
)
def test_model_kind_is_the_wire_kind(resource: wire.Resource, module: Any, model: str) -> None:
    fields = getattr(module, model).model_fields
    assert (module.KIND, fields["kind"].default, fields["api_version"].default) == (
        resource.kind,
        resource.kind,
        f"{wire.GROUP}/{wire.VERSION}",
    )


def test_cluster_flavor_kind_is_the_wire_kind() -> None:
    model = flavor.VirtualMachineClusterFlavor.model_fields["kind"].default
    assert (flavor.CLUSTER_KIND, model) == (wire.CLUSTER_FLAVORS.kind,) * 2


def test_every_crd_is_a_wire_resource() -> None:
    names = {k.name for k in crd.KINDS}
    resources = (
        wire.VIRTUAL_MACHINES,
        wire.HYPERVISOR_HOSTS,
        wire.MIGRATION_JOBS,
        wire.NETWORKS,
        wire.CLUSTER_FLAVORS,
        wire.FLAVORS,
        wire.SNAPSHOTS,
        wire.SNAPSHOT_SCHEDULES,
    )
    assert names == {f"{r.plural}.{wire.GROUP}" for r in resources}


def test_qualified_name_is_kubectls() -> None:
    assert wire.VIRTUAL_MACHINES.qualified == "virtualmachine.kubevisor.io"
