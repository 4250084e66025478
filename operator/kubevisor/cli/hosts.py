"""`kubevisor hosts`: capacity and allocation of every HypervisorHost, as a table or JSON.

Columns come from each host's status: READY and SCHEDULABLE are its conditions (Ready
from the agent's heartbeat as the controller judges it; Schedulable = Ready and neither
cordoned nor draining), HYPERVISOR is status.hypervisor.type, CPU and MEMORY are
status.allocated / status.allocatable (vCPUs; allocatable already applies the
allocation ratios and reservations), VMS is status.vmCount. "-" marks a value the host
has not reported yet. `-o json` prints {"items": [...]} with the same values as fields.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kubevisor.api import quantity
from kubevisor.cli import kubeapi
from kubevisor.cli.kubeapi import HOSTS, Object
from kubevisor.kube.cluster import Cluster

HEADER = ("NAME", "READY", "SCHEDULABLE", "HYPERVISOR", "CPU", "MEMORY", "VMS")


@dataclass(frozen=True, slots=True)
class HostRow:
    name: str
    ready: str
    schedulable: str
    hypervisor: str | None
    cpu_allocated: int | None
    cpu_allocatable: int | None
    memory_allocated: str | None
    memory_allocatable: str | None
    vms: int | None

    def cells(self) -> tuple[str, ...]:
        return (
            self.name,
            self.ready,
            self.schedulable,
            self.hypervisor or "-",
            f"{_text(self.cpu_allocated)}/{_text(self.cpu_allocatable)}",
            f"{_memory(self.memory_allocated)}/{_memory(self.memory_allocatable)}",
            _text(self.vms),
        )

    def wire(self) -> dict[str, Any]:
        """The JSON shape: camelCase keys, as the CRDs spell them."""
        row = asdict(self)
        return {
            "name": row["name"],
            "ready": row["ready"],
            "schedulable": row["schedulable"],
            "hypervisor": row["hypervisor"],
            "cpu": {"allocated": row["cpu_allocated"], "allocatable": row["cpu_allocatable"]},
            "memory": {
                "allocated": row["memory_allocated"],
                "allocatable": row["memory_allocatable"],
            },
            "vmCount": row["vms"],
        }


def _text(value: int | None) -> str:
    return "-" if value is None else str(value)


def _memory(value: str | None) -> str:
    """A status quantity shown the way placement prints sizes (8Gi, 1536Mi)."""
    if value is None:
        return "-"
    try:
        return quantity.format_mib(quantity.to_mib(value))
    except ValueError:
        return value


def _condition(status: Object, type_: str) -> str:
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == type_:
            return str(condition.get("status") or "Unknown")
    return "Unknown"


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def row(host: Object) -> HostRow:
    """One table row from a raw HypervisorHost (tolerant of a partial status)."""
    status: Object = host.get("status") or {}
    allocated = status.get("allocated") or {}
    allocatable = status.get("allocatable") or {}
    return HostRow(
        name=str((host.get("metadata") or {}).get("name", "")),
        ready=_condition(status, "Ready"),
        schedulable=_condition(status, "Schedulable"),
        hypervisor=_str((status.get("hypervisor") or {}).get("type")),
        cpu_allocated=_int(allocated.get("cpu")),
        cpu_allocatable=_int(allocatable.get("cpu")),
        memory_allocated=_str(allocated.get("memory")),
        memory_allocatable=_str(allocatable.get("memory")),
        vms=_int(status.get("vmCount")),
    )


def table(rows: Sequence[tuple[str, ...]]) -> str:
    """Left-aligned columns, three spaces apart, like kubectl get."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def register(subparsers: Any) -> None:
    parser = kubeapi.command(
        subparsers, "hosts", __doc__, help="capacity and allocation table of the HypervisorHosts"
    )
    parser.add_argument("-l", "--selector", default="", help="label selector, e.g. zone=a")
    parser.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="default table"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    def act(cluster: Cluster) -> int:
        hosts = cluster.items(HOSTS, label_selector=args.selector)
        rows = sorted((row(h) for h in hosts), key=lambda r: r.name)
        if args.output == "json":
            print(json.dumps({"items": [r.wire() for r in rows]}, indent=2))
        elif rows:
            print(table([HEADER, *(r.cells() for r in rows)]), end="")
        else:
            print("No HypervisorHosts found.", file=sys.stderr)
        return kubeapi.OK

    return kubeapi.with_cluster(args, act)
