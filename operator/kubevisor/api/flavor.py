"""The flavor custom resources: a VM size and tuning many VMs name (Nova's flavors,
KubeVirt's instancetypes).

VirtualMachineClusterFlavor is cluster-wide (admins write it, every namespace's VMs may
name it, like Nova's public flavors); VirtualMachineFlavor lives in one namespace, for
that namespace's VMs. Both hold a `FlavorSpec`, built from the VM spec's own models, and
no status: the VM records the flavor it runs (its status.flavor).
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from kubevisor.api.schema import ApiObject
from kubevisor.api.virtualmachine import FlavorSpec

CLUSTER_KIND: Final = "VirtualMachineClusterFlavor"
KIND: Final = "VirtualMachineFlavor"


class VirtualMachineClusterFlavor(ApiObject):
    """A whole cluster-wide flavor object."""

    kind: Literal["VirtualMachineClusterFlavor"] = Field(
        default=CLUSTER_KIND, description="VirtualMachineClusterFlavor."
    )
    spec: FlavorSpec = Field(description="The size and tuning VMs naming it get.")


class VirtualMachineFlavor(ApiObject):
    """A whole namespaced flavor object."""

    kind: Literal["VirtualMachineFlavor"] = Field(default=KIND, description="VirtualMachineFlavor.")
    spec: FlavorSpec = Field(description="The size and tuning VMs naming it get.")
