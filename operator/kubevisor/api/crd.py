"""CustomResourceDefinitions generated from the API models.

The models are the single source of the schema. `kubevisor crds generate` (cli/crds.py)
writes what `rendered()` returns into deploy/crds/, and the api tests fail when the
committed files differ. The conversion turns pydantic's JSON schema into a *structural*
OpenAPI v3 schema as the API server requires: every $ref inlined, optional fields plain
(not anyOf-with-null), JSON-Schema-2020 keywords translated to OpenAPI 3.0 ones, and
nothing the API server would refuse or silently drop.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from kubevisor.api import (
    hypervisorhost,
    migrationjob,
    network,
    snapshot,
    snapshotschedule,
    virtualmachine,
    wire,
)
from kubevisor.api.wire import GROUP, VERSION, Resource

CATEGORY = "kubevisor"

REGENERATE = "kubevisor crds generate"

# Order of keys inside one schema node, so the YAML reads top-down (what, type, limits,
# children, Kubernetes extensions) and stays byte-stable across pydantic releases.
_NODE_KEYS = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "items",
    "minProperties",
    "maxProperties",
    "properties",
    "required",
    "additionalProperties",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-validations",
)

_RULE_KEYS = ("rule", "message", "messageExpression", "fieldPath", "reason", "optionalOldSelf")

# pydantic keywords that carry nothing for the API server.
_DROPPED_KEYS = frozenset({"title"})


class SchemaError(ValueError):
    """The pydantic schema holds something a structural CRD schema cannot express."""


@dataclass(frozen=True)
class PrinterColumn:
    """One `kubectl get` column."""

    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0

    def to_dict(self) -> dict[str, Any]:
        column: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            column["priority"] = self.priority
        return column


def _age() -> PrinterColumn:
    return PrinterColumn(
        "Age", "date", ".metadata.creationTimestamp", "Time since the object was created."
    )


def _ready() -> PrinterColumn:
    return PrinterColumn(
        "Ready",
        "string",
        '.status.conditions[?(@.type=="Ready")].status',
        "Status of the Ready condition.",
    )


@dataclass(frozen=True)
class Kind:
    """Everything about one CRD that is not in its spec and status models."""

    resource: Resource
    short_names: tuple[str, ...]
    description: str
    spec: type[BaseModel]
    spec_description: str
    status: type[BaseModel] | None
    status_description: str
    columns: tuple[PrinterColumn, ...]
    spec_required: bool = True

    @property
    def name(self) -> str:
        return f"{self.resource.plural}.{GROUP}"


def _flavor_kind(resource: wire.Resource, scope: str) -> Kind:
    return Kind(
        resource=resource,
        short_names=(
            ("vmcf", "vmclusterflavor") if not resource.namespaced else ("vmf", "vmflavor")
        ),
        description=(
            f"{resource.kind} is a VM size and tuning ({scope}) that VirtualMachines name "
            "in spec.flavor, like a Nova flavor: vCPUs, memory, CPU policy, NUMA, huge "
            "pages, PCI aliases, CPU model, firmware, disk defaults. A VM setting a field "
            "its flavor sets too is refused (FlavorConflict)."
        ),
        spec=virtualmachine.FlavorSpec,
        spec_description=(
            "Any subset of a VM spec's sizing and tuning fields; VMs record it when they "
            "start, so an edit reaches each VM at its next start."
        ),
        status=None,
        status_description="",
        columns=(
            PrinterColumn("vCPUs", "integer", ".spec.cpu.vcpus", "Number of virtual CPUs."),
            PrinterColumn("Memory", "string", ".spec.memory.size", "Guest memory."),
            PrinterColumn("CPU Policy", "string", ".spec.cpu.policy", "shared or dedicated."),
            _age(),
        ),
    )


KINDS: tuple[Kind, ...] = (
    Kind(
        resource=wire.VIRTUAL_MACHINES,
        short_names=("vm", "vms"),
        description=(
            "VirtualMachine is a libvirt/KVM virtual machine that kubevisor places on a "
            "HypervisorHost with OpenStack Nova's rules and keeps running per its "
            "runStrategy."
        ),
        spec=virtualmachine.VirtualMachineSpec,
        spec_description="Desired state of the virtual machine, written by users or GitOps.",
        status=virtualmachine.VirtualMachineStatus,
        status_description=(
            "Observed state, written by the kubevisor controller (placement) and the "
            "agent of the bound host."
        ),
        columns=(
            PrinterColumn("Phase", "string", ".status.phase", "Lifecycle phase."),
            PrinterColumn("Host", "string", ".status.host", "HypervisorHost the VM is bound to."),
            # The size claimed on the host: the effective one, also of a VM from a flavor.
            PrinterColumn(
                "vCPUs", "integer", ".status.placement.size.vcpus", "Virtual CPUs claimed."
            ),
            PrinterColumn("Memory", "string", ".status.placement.size.memory", "Memory claimed."),
            PrinterColumn("Flavor", "string", ".spec.flavor.name", "Flavor the VM names."),
            _age(),
            dataclasses.replace(_ready(), priority=1),
            PrinterColumn(
                "CPU Policy",
                "string",
                ".status.placement.size.cpuPolicy",
                "shared or dedicated, as claimed.",
                1,
            ),
            PrinterColumn("Group", "string", ".spec.placement.group", "Server group.", 1),
            PrinterColumn(
                "IP",
                "string",
                ".status.interfaces[0].ipAddresses[0]",
                "First address of the first interface on a Network.",
                1,
            ),
        ),
    ),
    Kind(
        resource=wire.HYPERVISOR_HOSTS,
        short_names=("hvh",),
        description=(
            "HypervisorHost is one libvirt hypervisor that can run VirtualMachines. Its "
            "agent creates it and reports capacity; admins cordon, drain and tune it."
        ),
        spec=hypervisorhost.HypervisorHostSpec,
        spec_description="Admin settings: cordon, drain, allocation ratios, reserved resources.",
        status=hypervisorhost.HypervisorHostStatus,
        status_description="What the host offers and carries, written by its agent.",
        columns=(
            _ready(),
            PrinterColumn("Hypervisor", "string", ".status.hypervisor.type", "Hypervisor type."),
            PrinterColumn(
                "CPU Allocated", "integer", ".status.allocated.cpu", "vCPUs allocated to VMs."
            ),
            PrinterColumn(
                "CPU Allocatable", "integer", ".status.allocatable.cpu", "vCPUs VMs may use."
            ),
            PrinterColumn(
                "Memory Allocated", "string", ".status.allocated.memory", "Memory allocated."
            ),
            PrinterColumn(
                "Memory Allocatable", "string", ".status.allocatable.memory", "Memory VMs may use."
            ),
            PrinterColumn("VMs", "integer", ".status.vmCount", "VMs bound to the host."),
            _age(),
            PrinterColumn(
                "Schedulable",
                "string",
                '.status.conditions[?(@.type=="Schedulable")].status',
                "Status of the Schedulable condition.",
                1,
            ),
            PrinterColumn(
                "Version", "string", ".status.hypervisor.version", "Hypervisor version.", 1
            ),
        ),
        spec_required=False,
    ),
    Kind(
        resource=wire.MIGRATION_JOBS,
        short_names=("vmmig",),
        description="MigrationJob live-migrates one VirtualMachine to another HypervisorHost.",
        spec=migrationjob.MigrationJobSpec,
        spec_description=(
            "What to migrate, where to, and how. spec.vm and spec.targetHost are immutable."
        ),
        status=migrationjob.MigrationJobStatus,
        status_description=(
            "Observed state, written by the controller (phase, hosts) and the source "
            "host's agent (progress)."
        ),
        columns=(
            PrinterColumn("VM", "string", ".spec.vm", "VirtualMachine being migrated."),
            PrinterColumn("Source", "string", ".status.source", "Host the VM migrates from."),
            PrinterColumn("Target", "string", ".status.target", "Host the VM migrates to."),
            PrinterColumn("Phase", "string", ".status.phase", "Migration phase."),
            PrinterColumn("Progress", "integer", ".status.progress.percent", "Percent done."),
            _age(),
        ),
    ),
    Kind(
        resource=wire.NETWORKS,
        short_names=("vnet",),
        description=(
            "Network is an IPv4 network the VirtualMachines of its namespace attach to: a "
            "provider network (a physical network of the hosts, optionally a VLAN; cluster "
            "admins only) or an overlay (VXLAN between the hosts). The controller hands "
            "out its addresses."
        ),
        spec=network.NetworkSpec,
        spec_description=(
            "Type, segment and subnet, written by users or GitOps. type, provider, overlay "
            "and subnet.cidr are immutable."
        ),
        status=network.NetworkStatus,
        status_description="Observed state, written by the kubevisor controller.",
        columns=(
            PrinterColumn("Type", "string", ".spec.type", "provider or overlay."),
            PrinterColumn("CIDR", "string", ".spec.subnet.cidr", "The IPv4 subnet."),
            PrinterColumn("Used", "integer", ".status.used", "Pool addresses handed out."),
            PrinterColumn("Free", "integer", ".status.free", "Pool addresses still free."),
            _age(),
            dataclasses.replace(_ready(), priority=1),
            PrinterColumn("VNI", "integer", ".status.vni", "Overlay: VXLAN network id.", 1),
            PrinterColumn(
                "Physical Network",
                "string",
                ".spec.provider.physicalNetwork",
                "Provider: the hosts' physical network.",
                1,
            ),
            PrinterColumn("VLAN", "integer", ".spec.provider.vlan", "Provider: VLAN id.", 1),
        ),
    ),
    _flavor_kind(wire.CLUSTER_FLAVORS, "cluster-wide, written by admins"),
    _flavor_kind(wire.FLAVORS, "for the VMs of its namespace"),
    Kind(
        resource=wire.SNAPSHOTS,
        short_names=("vmsnap", "vmsnapshot"),
        description=(
            "VirtualMachineSnapshot is a point-in-time copy of one VirtualMachine's disks: "
            "self-contained images in the host's content-addressed image cache, each "
            "named by its sha256."
        ),
        spec=snapshot.VirtualMachineSnapshotSpec,
        spec_description="Which VM to copy. Immutable.",
        status=snapshot.VirtualMachineSnapshotStatus,
        status_description="Observed state, written by the agent of the VM's host.",
        columns=(
            PrinterColumn("VM", "string", ".spec.vm", "VirtualMachine copied."),
            PrinterColumn("Phase", "string", ".status.phase", "Snapshot phase."),
            PrinterColumn("Size", "string", ".status.sizeText", "Bytes of all images."),
            _age(),
            PrinterColumn("Host", "string", ".status.host", "Host keeping the images.", 1),
            PrinterColumn(
                "Consistency", "string", ".status.consistency", "How consistent the copy is.", 1
            ),
            PrinterColumn("Reason", "string", ".status.reason", "Why it failed.", 1),
        ),
    ),
    Kind(
        resource=wire.SNAPSHOT_SCHEDULES,
        short_names=("vmsnapsched",),
        description=(
            "VirtualMachineSnapshotSchedule snapshots one VirtualMachine on a cron schedule "
            "and keeps the newest `keep` Ready snapshots, deleting older ones."
        ),
        spec=snapshotschedule.VirtualMachineSnapshotScheduleSpec,
        spec_description="Which VM, when, how many to keep.",
        status=snapshotschedule.VirtualMachineSnapshotScheduleStatus,
        status_description="Observed state, written by the controller.",
        columns=(
            PrinterColumn("VM", "string", ".spec.vm", "VirtualMachine snapshotted."),
            PrinterColumn("Schedule", "string", ".spec.schedule", "Cron schedule (UTC)."),
            PrinterColumn("Keep", "integer", ".spec.keep", "Ready snapshots kept."),
            PrinterColumn("Suspend", "boolean", ".spec.suspend", "No snapshots while true."),
            PrinterColumn("Last", "date", ".status.lastSnapshotTime", "Last snapshot due time."),
            PrinterColumn("Next", "date", ".status.nextSnapshotTime", "Next snapshot due time."),
            _age(),
        ),
    ),
)


def structural_schema(model: type[BaseModel], *, description: str) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of `model`, as a CRD's spec or status property."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    schema = _convert(raw, definitions, path=model.__name__)
    schema["description"] = description
    return _ordered(schema)


def _overlay(base: dict[str, Any], siblings: dict[str, Any]) -> dict[str, Any]:
    # The referencing field's description and default describe this use of the type;
    # CEL rules of both the type and the field apply.
    merged = {**copy.deepcopy(base), **siblings}
    rules = base.get("x-kubernetes-validations", []) + siblings.get("x-kubernetes-validations", [])
    if rules:
        merged["x-kubernetes-validations"] = copy.deepcopy(rules)
    return merged


def _convert(node: dict[str, Any], definitions: dict[str, Any], *, path: str) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        return _convert(_overlay(definitions[name], node), definitions, path=path)
    if "anyOf" in node:
        choices = [choice for choice in node.pop("anyOf") if choice != {"type": "null"}]
        if len(choices) != 1:
            raise SchemaError(f"{path}: a union is not structural; use one type per field")
        if node.get("default", ...) is None:
            # Optional fields are simply not required; a null default would be stored.
            del node["default"]
        return _convert(_overlay(choices[0], node), definitions, path=path)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020 carries the bound itself; OpenAPI 3.0 (Kubernetes) a flag.
            out[key.replace("exclusiveM", "m")] = value
            out[key] = True
        elif key == "properties":
            out[key] = {
                name: _convert(child, definitions, path=f"{path}.{name}")
                for name, child in value.items()
            }
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, definitions, path=f"{path}[]")
        elif key == "additionalProperties" and value is False:
            continue
        elif key == "x-kubernetes-validations":
            out[key] = [
                {name: entry[name] for name in _RULE_KEYS if name in entry} for entry in value
            ]
        elif key in _NODE_KEYS:
            out[key] = copy.deepcopy(value)
        else:
            raise SchemaError(f"{path}: {key!r} has no place in a structural CRD schema")
    if "type" not in out:
        raise SchemaError(f"{path}: every node of a structural schema needs a type")
    if "description" in out and isinstance(out.get("default"), str | bool | int | float):
        # `kubectl explain` prints descriptions and enums but not defaults.
        default = out["default"]
        shown = default if isinstance(default, str) else json.dumps(default)
        out["description"] = f"{out['description']} Default: {shown}."
    return out


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _NODE_KEYS:
        if key not in node:
            continue
        value = node[key]
        if key == "properties":
            value = {name: _ordered(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = _ordered(value)
        out[key] = value
    return out


def definition(kind: Kind) -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CustomResourceDefinition of `kind`."""
    spec = structural_schema(kind.spec, description=kind.spec_description)
    if not kind.spec_required:
        spec["default"] = {}
        spec = _ordered(spec)
    root: dict[str, Any] = {
        "description": kind.description,
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion of this object: kubevisor.io/v1alpha1.",
                "type": "string",
            },
            "kind": {
                "description": f"Kind of this object: {kind.resource.kind}.",
                "type": "string",
            },
            # The API server allows nothing but the type here; explain documents ObjectMeta.
            "metadata": {"type": "object"},
            "spec": spec,
        },
    }
    if kind.status is not None:
        root["properties"]["status"] = structural_schema(
            kind.status, description=kind.status_description
        )
    if kind.spec_required:
        root["required"] = ["spec"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.name},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.resource.kind,
                "listKind": f"{kind.resource.kind}List",
                "plural": kind.resource.plural,
                "singular": kind.resource.singular,
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced" if kind.resource.namespaced else "Cluster",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {"status": {}} if kind.status is not None else {},
                    "additionalPrinterColumns": [column.to_dict() for column in kind.columns],
                }
            ],
        },
    }


def definitions() -> list[dict[str, Any]]:
    """Every kubevisor CRD, in a fixed order."""
    return [definition(kind) for kind in KINDS]


def file_name(crd: dict[str, Any]) -> str:
    """deploy/crds/ file name of a CRD: <plural>.kubevisor.io.yaml."""
    name: str = crd["metadata"]["name"]
    return f"{name}.yaml"


def render(crd: dict[str, Any]) -> str:
    """A CRD as the YAML text committed in deploy/crds/."""
    header = (
        "# Generated from operator/kubevisor/api by `kubevisor crds generate`; do not edit.\n"
        f"# Regenerate after changing the models: {REGENERATE}\n"
        f"# Check that this file is current:      {REGENERATE} --check\n"
    )
    body = yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True)
    return header + body


def rendered() -> dict[str, str]:
    """File name -> YAML text for every CRD: what deploy/crds/ must contain."""
    return {file_name(crd): render(crd) for crd in definitions()}
