"""Snapshots: `kubevisor snapshot VM [--name NAME] [--wait]` and `kubevisor restore VM SNAPSHOT`.

- snapshot creates a VirtualMachineSnapshot of the VM; the agent of its host copies the
  disks (a running VM keeps running: the copy is crash-consistent, or frozen through the
  guest agent where one runs). --wait waits until it is Ready (exit 0) or Failed (1).
- restore puts the VM's disks back to a Ready snapshot of it. The VM must be stopped
  (`kubevisor stop VM`); restore sets the annotation kubevisor.io/restore and the agent
  copies the snapshot's images over the disks when it next starts the VM, which keeps its
  name, UID, MAC and IP addresses.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from kubevisor.api.snapshot import TERMINAL_PHASES, VirtualMachineSnapshot
from kubevisor.api.wire import API_VERSION, RESTORE_ANNOTATION, SNAPSHOTS
from kubevisor.cli import kubeapi
from kubevisor.cli.kubeapi import VMS, CliError, Object
from kubevisor.kube.cluster import Cluster

POLL = 0.5


def snapshot_body(vm: str, name: str) -> Object:
    return {
        "apiVersion": API_VERSION,
        "kind": SNAPSHOTS.kind,
        "metadata": {"name": name},
        "spec": {"vm": vm},
    }


def default_name(vm: str, now: datetime) -> str:
    """VM-YYYYMMDD-HHMMSS (UTC)."""
    return f"{vm}-{now.strftime('%Y%m%d-%H%M%S')}"


def restore_refusal(vm: Object, snapshot: Object) -> str | None:
    """Why `snapshot` cannot be restored into `vm` now; None when it can."""
    name = vm["metadata"]["name"]
    phase = (vm.get("status") or {}).get("phase")
    if phase != "Stopped":
        return (
            f"virtualmachine {name} is {phase or 'not stopped'}; a restore needs it stopped: "
            f"run `kubevisor stop {name}` first"
        )
    snap = VirtualMachineSnapshot.model_validate(snapshot)
    status = snap.status
    label = f"snapshot {snapshot['metadata']['name']}"
    if status is None or status.phase != "Ready":
        return f"{label} is not Ready (phase {status.phase if status else 'Pending'})"
    if status.vm_uid != vm["metadata"].get("uid"):
        return f"{label} copies another VM ({snap.spec.vm}); only a VM's own snapshots restore"
    return None


def run_snapshot(args: argparse.Namespace) -> int:
    def act(cluster: Cluster) -> int:
        cluster.get(VMS, args.vm)  # a clear 404 for a VM that does not exist
        name = args.name or default_name(args.vm, datetime.now(UTC))
        cluster.create(SNAPSHOTS, snapshot_body(args.vm, name))
        print(f"{SNAPSHOTS.qualified}/{name} created")
        if not args.wait:
            return kubeapi.OK
        return _wait(cluster, name, timeout=args.timeout)

    return kubeapi.with_cluster(args, act)


def _wait(cluster: Cluster, name: str, *, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        status = cluster.get(SNAPSHOTS, name).get("status") or {}
        if status.get("phase") in TERMINAL_PHASES:
            break
        if time.monotonic() > deadline:
            raise CliError(
                f"snapshot {name} is still {status.get('phase') or 'Pending'} after "
                f"{kubeapi.format_duration(timeout)}",
                code=kubeapi.FAILED,
            )
        time.sleep(POLL)
    if status["phase"] == "Failed":
        raise CliError(f"snapshot {name} failed: {status.get('reason')}: {status.get('message')}")
    size, consistency = status.get("sizeText"), status.get("consistency")
    print(f"{SNAPSHOTS.qualified}/{name} Ready: {size}, {consistency}")
    return kubeapi.OK


def run_restore(args: argparse.Namespace) -> int:
    def act(cluster: Cluster) -> int:
        vm = cluster.get(VMS, args.vm)
        refusal = restore_refusal(vm, cluster.get(SNAPSHOTS, args.snapshot))
        if refusal is not None:
            raise CliError(refusal)
        value = f"{args.snapshot}@{int(time.time())}"
        patch = {
            "metadata": {
                "resourceVersion": vm["metadata"]["resourceVersion"],
                "annotations": {RESTORE_ANNOTATION: value},
            }
        }
        cluster.merge_patch(VMS, args.vm, patch)
        print(
            f"{VMS.qualified}/{args.vm} restores from snapshot {args.snapshot} at its next "
            f"start (`kubevisor start {args.vm}`)"
        )
        return kubeapi.OK

    return kubeapi.with_cluster(args, act)


def register(subparsers: Any) -> None:
    snap = kubeapi.command(subparsers, "snapshot", __doc__, help="snapshot a VM's disks")
    snap.add_argument("vm", metavar="VM", help="VirtualMachine name")
    snap.add_argument("--name", help="snapshot name (default: VM-YYYYMMDD-HHMMSS)")
    snap.add_argument("--wait", action="store_true", help="wait until it is Ready or Failed")
    kubeapi.add_timeout(snap, default="10m", help="how long --wait waits")
    snap.set_defaults(func=run_snapshot)
    restore = kubeapi.command(
        subparsers, "restore", __doc__, help="put a stopped VM's disks back to a snapshot"
    )
    restore.add_argument("vm", metavar="VM", help="VirtualMachine name (stopped)")
    restore.add_argument("snapshot", metavar="SNAPSHOT", help="a Ready snapshot of the VM")
    restore.set_defaults(func=run_restore)
