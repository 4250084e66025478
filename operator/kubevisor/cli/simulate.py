"""`kubevisor simulate`: what-if placement from files, before touching a cluster.

Reads HypervisorHosts and VirtualMachines (YAML, the CRD shapes; multi-document files
or `kind: List`), claims the VMs that already have `status.host`, then places the
others in file order exactly as the controller would, printing each decision (host,
NUMA cells, pins, what the host has of the VM's images and shared storage) or the
explanation, and the final utilisation per host. Admins use it to try ratios,
reservations, CPU sets, groups and weigher multipliers. Nothing is written anywhere.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import yaml

from kubevisor import flags
from kubevisor.api import quantity
from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.placement import capacity, inputs, scheduler
from kubevisor.core.placement.capacity import AllocationRatios
from kubevisor.core.placement.model import NumaFit
from kubevisor.core.placement.scheduler import Decision, Options
from kubevisor.core.placement.weighers import Multipliers


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="place VMs on hosts from YAML files and print every decision (what-if)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--hosts", type=Path, required=True, help="YAML of HypervisorHosts")
    parser.add_argument("--vms", type=Path, required=True, help="YAML of VirtualMachines")
    flags.add_placement(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed for --host-subset-size")
    parser.set_defaults(func=run)


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as stream:
        for document in yaml.safe_load_all(stream):
            if not isinstance(document, dict):
                continue
            if document.get("kind") == "List" or "items" in document:
                yield from (item for item in document.get("items", []) if isinstance(item, dict))
            else:
                yield document


def describe(fit: NumaFit | None) -> str:
    """One line per decision's NUMA part: cells, pins, emulator pins."""
    if fit is None:
        return ""
    parts = []
    for cell in fit.cells:
        text = f"guest cell {cell.guest_cell} -> host cell {cell.host_cell}"
        if cell.pins:
            text += " pins " + ",".join(f"{p.vcpu}:{p.pcpu}" for p in cell.pins)
        if cell.hugepage_kib:
            text += f" hugepages {cell.hugepages}x{cell.hugepage_kib}KiB"
        parts.append(text)
    if fit.emulator_pins:
        parts.append("emulator " + ",".join(str(p) for p in sorted(fit.emulator_pins)))
    return "; ".join(parts)


def simulate(
    hosts: list[HypervisorHost],
    vms: list[VirtualMachine],
    *,
    defaults: AllocationRatios,
    multipliers: Multipliers,
    options: Options,
    rng: random.Random,
    out: TextIO,
) -> int:
    """Place `vms` on `hosts`, writing the report to `out`; returns how many did not fit."""
    snapshots = [inputs.host_snapshot(host) for host in hosts]
    listing = inputs.state_from(snapshots, vms, ratios=defaults, multipliers=multipliers)
    state, pending = listing.state, listing.unbound
    bound = len(vms) - len(pending)
    out.write(f"{len(snapshots)} hosts, {bound} VMs already bound, {len(pending)} to place\n")
    for claim, _ in listing.conflicts:
        out.write(f"  conflict: {claim.vm} on {claim.host} cannot be held as recorded\n")
    for snapshot in snapshots:
        for warning in capacity.warnings(snapshot):
            out.write(f"  warning: {warning}\n")
    failures = 0
    for vm in pending:
        request = inputs.request(vm)
        decision = scheduler.place(state, request, options=options, rng=rng)
        if isinstance(decision, Decision):
            details = [part for part in (describe(decision.numa), *decision.notes) if part]
            out.write(
                f"{request.name} -> {decision.host}"
                + (f"  ({'; '.join(details)})" if details else "")
                + "\n"
            )
        else:
            failures += 1
            out.write(f"{request.name} -> Unschedulable: {decision.message}\n")
    out.write("\n")
    header = ("HOST", "VMS", "VCPU", "PCPU", "MEMORY", "DISK")
    rows = [header]
    for host in state.hosts():
        inv, usage = state.inventory(host.name), state.usage(host.name)
        rows.append(
            (
                host.name + ("" if host.ready and host.schedulable else " (not schedulable)"),
                str(usage.vms),
                f"{usage.vcpus}/{inv.vcpu.capacity}",
                f"{usage.pcpus}/{inv.pcpu.capacity}",
                f"{quantity.format_mib(usage.memory_mib)}/{quantity.format_mib(inv.memory.capacity)}",
                f"{quantity.format_mib(usage.disk_mib)}/{quantity.format_mib(inv.disk.capacity)}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")
    return failures


def run(args: argparse.Namespace) -> int:
    hosts = [
        HypervisorHost.model_validate(d)
        for d in _documents(args.hosts)
        if d.get("kind") == "HypervisorHost"
    ]
    vms = [
        VirtualMachine.model_validate(d)
        for d in _documents(args.vms)
        if d.get("kind") == "VirtualMachine"
    ]
    failures = simulate(
        hosts,
        vms,
        defaults=flags.ratios(args),
        multipliers=flags.multipliers(args),
        options=flags.scheduler_options(args),
        rng=random.Random(args.seed),
        out=sys.stdout,
    )
    return 1 if failures else 0
