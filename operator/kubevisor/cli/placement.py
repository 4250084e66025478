"""`kubevisor explain-placement VM`: why a VM is where it is, or why it is nowhere.

From the VM's status: the host it is bound to, the NUMA cells, vCPU pins, huge pages
and shared CPUs placement chose there, and its Scheduled condition; for a VM that is
not bound, the condition's message (for an Unschedulable VM, the engine's explanation:
"0/12 hosts fit: 7 insufficient memory (need 8Gi, best has 6Gi free), ...").

`--what-if` asks the placement engine now, on this machine: it lists the
HypervisorHosts and every VirtualMachine from the API, rebuilds the placement state
with the claims of every bound VM except this one (what the controller holds) and runs
select_host for this VM as if it were new (within its namespace's host pool, read from
the Namespace), printing the decision or the full explanation plus how many hosts each
filter turned down. The default allocation ratios and weigher multipliers must match
the controller's (--cpu-ratio etc., --weigher-multiplier; the controller's defaults are
the same).

Exit codes: 0 the VM is bound (with --what-if: a host fits), 1 it is not (none fits).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from kubevisor import flags
from kubevisor.api import conditions, cpuset, objects
from kubevisor.api.hypervisorhost import HypervisorHost
from kubevisor.api.virtualmachine import PlacementStatus, VirtualMachine
from kubevisor.cli import kubeapi
from kubevisor.cli.kubeapi import HOSTS, VMS, CliError, Object
from kubevisor.cli.simulate import describe
from kubevisor.core.placement import explain as explaining
from kubevisor.core.placement import inputs, pools, scheduler
from kubevisor.core.placement.capacity import AllocationRatios
from kubevisor.core.placement.explain import Explanation
from kubevisor.core.placement.model import Claim, NamespacePool
from kubevisor.core.placement.scheduler import Decision, NoFit
from kubevisor.core.placement.weighers import Multipliers
from kubevisor.kube.cluster import Cluster


def placement_lines(placement: PlacementStatus | None) -> list[str]:
    """The NUMA cells, pins, huge pages and CPU sets of a VM's status.placement."""
    if placement is None:
        return []
    lines = []
    for cell in placement.cells:
        text = f"guest cell {cell.guest_cell} -> host cell {cell.host_cell}"
        if cell.vcpu_pins:
            text += ", pins " + ",".join(f"{p.vcpu}:{p.pcpu}" for p in cell.vcpu_pins)
        if cell.memory:
            text += f", memory {cell.memory}"
        if cell.hugepages:
            text += f", hugepages {cell.hugepages.count}x{cell.hugepages.page_size}"
        lines.append(text)
    if placement.emulator_pins:
        lines.append(f"emulator threads on host CPUs {cpuset.render(placement.emulator_pins)}")
    if placement.shared_cpus:
        lines.append(f"vCPUs float over host CPUs {cpuset.render(placement.shared_cpus)}")
    for device in placement.pci_devices:
        lines.append(f"PCI device {device.address} for alias {device.alias}")
    return lines


def explain_status(vm: VirtualMachine) -> tuple[bool, list[str]]:
    """(bound?, lines) from what the VM's status says; pure."""
    name = objects.key(vm.metadata)
    status = vm.status
    scheduled = conditions.find(status.conditions, conditions.SCHEDULED) if status else None
    said = []
    if scheduled is not None:
        since = (
            f", since {scheduled.last_transition_time.isoformat()}"
            if scheduled.last_transition_time
            else ""
        )
        said.append(
            f"Scheduled={scheduled.status} ({scheduled.reason or 'no reason'}{since}): "
            f"{scheduled.message or ''}".rstrip(": ")
        )
    phase = status.phase if status else None
    if status is not None and status.host:
        lines = [f"{name} is on {status.host} (phase {phase})"]
        lines += ["  " + line for line in placement_lines(status.placement)]
        if status.last_migration is not None and status.last_migration.target == status.host:
            moved = status.last_migration
            lines.append(f"  moved there from {moved.source} by MigrationJob {moved.job}")
        lines += ["  " + line for line in said]
        return True, lines
    if vm.spec.run_strategy == "Halted":
        head = f"{name} is on no host: it is stopped (runStrategy Halted)"
    elif phase == "Unschedulable" and scheduled is not None and scheduled.message:
        head = f"{name} is on no host: {scheduled.message}"
    else:
        head = f"{name} is on no host yet (phase {phase or 'not reported'})"
    return False, [head, *("  " + line for line in said)]


def what_if(
    vm: VirtualMachine,
    hosts: Iterable[HypervisorHost],
    vms: Iterable[VirtualMachine],
    *,
    ratios: AllocationRatios,
    multipliers: Multipliers | None = None,
    pool: NamespacePool | None = None,
) -> tuple[Decision | NoFit, Explanation, list[Claim]]:
    """Place `vm` against every other bound VM's claim, within its namespace's host `pool`:
    (decision, full scan, conflicts)."""
    me = objects.key(vm.metadata)
    listing = inputs.state_from(
        [inputs.host_snapshot(host) for host in hosts],
        [other for other in vms if objects.key(other.metadata) != me],
        ratios=ratios,
        multipliers=multipliers,
    )
    request = inputs.request(vm, pool=pool)
    return (
        scheduler.select_host(listing.state, request),
        explaining.explain(listing.state, request),
        [conflict.claim for conflict in listing.conflicts],
    )


def what_if_lines(
    decision: Decision | NoFit, scan: Explanation, conflicts: list[Claim]
) -> list[str]:
    lines = []
    if isinstance(decision, Decision):
        numa = describe(decision.numa)
        lines.append(
            f"what-if: {decision.request.name} would be placed on {decision.host}"
            + (f" ({numa})" if numa else "")
        )
        lines.extend(f"  {note}" for note in decision.notes)
        if decision.alternates:
            lines.append(f"  alternates, best first: {', '.join(decision.alternates)}")
        lines.append(f"  {scan.message}")
    else:
        lines.append(f"what-if: {decision.request.name} fits nowhere: {decision.message}")
    per_filter: dict[str, int] = {}
    for reason in scan.reasons:
        per_filter[reason.filter] = per_filter.get(reason.filter, 0) + reason.hosts
    if per_filter:
        lines.append("  hosts turned down per filter (first failing filter only):")
        width = max(len(f) for f in per_filter)
        for name, count in sorted(per_filter.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"    {name.ljust(width)}  {count}")
    for claim in conflicts:
        lines.append(f"  note: {claim.vm} on {claim.host} conflicts with other claims (ignored)")
    return lines


def _model(obj: Object) -> VirtualMachine:
    try:
        return VirtualMachine.model_validate(obj)
    except ValidationError as invalid:
        name = (obj.get("metadata") or {}).get("name")
        raise CliError(
            f"virtualmachine {name} cannot be read: {invalid.errors()[0]['msg']}"
        ) from None


def readable(objs: Iterable[Object], model: type[Any], what: str) -> list[Any]:
    """Parsed objects; an unreadable one is skipped with a warning, as the controller does."""
    parsed = []
    for obj in objs:
        try:
            parsed.append(model.model_validate(obj))
        except ValidationError:
            name = (obj.get("metadata") or {}).get("name")
            print(f"warning: skipping {what} {name}: it cannot be read", file=sys.stderr)
    return parsed


def register(subparsers: Any) -> None:
    parser = kubeapi.vm_command(
        subparsers,
        "explain-placement",
        __doc__,
        help="why a VM is on its host, or why it fits nowhere (--what-if: ask the engine)",
    )
    parser.add_argument(
        "--what-if",
        action="store_true",
        help="run the placement engine locally against the cluster's hosts and VMs",
    )
    flags.add_placement(parser, subset=False)
    parser.set_defaults(func=run)


def ask_engine(
    cluster: Cluster, vm: VirtualMachine, args: argparse.Namespace
) -> tuple[bool, list[str]]:
    """(placed?, lines) of `--what-if` for `vm`, from the cluster's hosts and VMs and the
    placement flags in `args`; `kubevisor diagnose` asks it too."""
    hosts = readable(cluster.items(HOSTS), HypervisorHost, "hypervisorhost")
    vms = readable(cluster.items(VMS, all_namespaces=True), VirtualMachine, "virtualmachine")
    namespace = cluster.namespace
    decision, scan, conflicts = what_if(
        vm,
        hosts,
        vms,
        ratios=flags.ratios(args),
        multipliers=flags.multipliers(args),
        pool=pools.pool_of(namespace, cluster.namespace_annotations(namespace)),
    )
    return isinstance(decision, Decision), what_if_lines(decision, scan, conflicts)


def run(args: argparse.Namespace) -> int:
    def act(cluster: Cluster) -> int:
        vm = _model(cluster.get(VMS, args.vm))
        bound, lines = explain_status(vm)
        print("\n".join(lines))
        if not args.what_if:
            return kubeapi.OK if bound else kubeapi.FAILED
        placed, lines = ask_engine(cluster, vm, args)
        print("\n".join(lines))
        return kubeapi.OK if placed else kubeapi.FAILED

    return kubeapi.with_cluster(args, act)
