"""kubevisor's wire vocabulary: the names other programs see on the API server.

The API group and version, each custom resource's kind and plural, the labels, finalizers
and annotations kubevisor puts on objects, the field managers its writers apply status
under, and its default namespace. Each is defined here once; the access layer
(`kubevisor.kube`), the controller, the agent, the console API, the CLI and the CRD
generator (`kubevisor.api.crd`) read them from here, so renaming one is one edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

GROUP: Final = "kubevisor.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "kubevisor.io/v1alpha1"


@dataclass(frozen=True, slots=True)
class Resource:
    """One kubevisor custom resource as the API addresses it. `kind` is also the Literal of
    its model's `kind` field (tests/api/test_wire.py holds the two together)."""

    kind: str
    plural: str
    namespaced: bool

    @property
    def singular(self) -> str:
        """The kind in lower case, as Kubernetes derives it."""
        return self.kind.lower()

    @property
    def qualified(self) -> str:
        """`virtualmachine.kubevisor.io`, as kubectl names objects in its output."""
        return f"{self.singular}.{GROUP}"


VIRTUAL_MACHINES: Final = Resource("VirtualMachine", "virtualmachines", True)
HYPERVISOR_HOSTS: Final = Resource("HypervisorHost", "hypervisorhosts", False)
MIGRATION_JOBS: Final = Resource("MigrationJob", "migrationjobs", True)
NETWORKS: Final = Resource("Network", "networks", True)
CLUSTER_FLAVORS: Final = Resource(
    "VirtualMachineClusterFlavor", "virtualmachineclusterflavors", False
)
FLAVORS: Final = Resource("VirtualMachineFlavor", "virtualmachineflavors", True)
SNAPSHOTS: Final = Resource("VirtualMachineSnapshot", "virtualmachinesnapshots", True)
SNAPSHOT_SCHEDULES: Final = Resource(
    "VirtualMachineSnapshotSchedule", "virtualmachinesnapshotschedules", True
)

# -- labels, finalizers, annotations -----------------------------------------------------

HOST_LABEL: Final = f"{GROUP}/host"
"""On a VirtualMachine: the HypervisorHost it is bound to; its agent watches by it."""
MIGRATION_SOURCE_LABEL: Final = f"{GROUP}/migration-source"
"""On a MigrationJob: the host the VM leaves; that host's agent watches by it."""
MIGRATION_TARGET_LABEL: Final = f"{GROUP}/migration-target"
"""On a MigrationJob: the host the VM moves to; that host's agent watches by it."""
SCHEDULE_LABEL: Final = f"{GROUP}/snapshot-schedule"
"""On a VirtualMachineSnapshot the controller created for a VirtualMachineSnapshotSchedule:
the schedule's name (retention counts and deletes only these)."""
DRAIN_LABEL: Final = f"{GROUP}/drain"
"""On a MigrationJob the controller created to drain a host: that host."""
VM_FINALIZER: Final = f"{GROUP}/vm-protection"
"""Held by a bound VirtualMachine until its domain is gone (or its host lost)."""
MIGRATION_FINALIZER: Final = f"{GROUP}/migration-protection"
"""Held by a MigrationJob the controller started, until it has released the job's claim."""
LAST_RUN_STRATEGY_ANNOTATION: Final = f"{GROUP}/last-run-strategy"
"""On a VirtualMachine `kubevisor stop` halted: the runStrategy `kubevisor start` restores."""
RESTORE_ANNOTATION: Final = f"{GROUP}/restore"
"""On a VirtualMachine (set by `kubevisor restore`): `SNAPSHOT[@REQUEST]`, the
VirtualMachineSnapshot whose images the VM's disks go back to at its next start (its
agent restores each request once; REQUEST tells two restores from one snapshot apart)."""
HOST_SELECTOR_ANNOTATION: Final = f"{GROUP}/host-selector"
"""On a Namespace (set by cluster admins): the host pool of its VMs, "key=value,..." ANDed
with every VM's own host selector (`core.placement.pools`)."""

# -- who writes ----------------------------------------------------------------------------
# Server-side-apply field managers, also the component Events name. Each writer owns
# exactly the fields it applies (DESIGN.md section 3, one writer per field).

AGENT: Final = "kubevisor-agent"
CONTROLLER: Final = "kubevisor-controller"
CLI: Final = "kubevisor-cli"
MIGRATION_SOURCE_MANAGER: Final = "kubevisor-agent-migration-source"
"""The source agent's part of a MigrationJob's status (progress)."""
MIGRATION_TARGET_MANAGER: Final = "kubevisor-agent-migration-target"
"""The target agent's part of a MigrationJob's status (the prepared domain)."""
FLAVOR_MANAGER: Final = "kubevisor-controller-flavor"
"""The controller's record of the flavor a VM runs (its status.flavor)."""

SYSTEM_NAMESPACE: Final = "kubevisor-system"
"""Where kubevisor runs, and the hosts' heartbeat Leases live, unless told otherwise."""
