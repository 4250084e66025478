"""VM verbs: start, stop, restart, pause, unpause, resize (migrate: cli/migrate.py).

Each verb changes one spec field, never status, so what it did is declarative and
visible to `kubectl get` and GitOps diffs:

- stop: spec.runStrategy -> Halted, remembering the previous strategy in the annotation
  `kubevisor.io/last-run-strategy`;
- start: spec.runStrategy Halted -> the remembered strategy (default Always), dropping
  the annotation;
- restart: stop, wait until status.phase is Stopped (for the new generation), start.
  There is no spec field that means "restart once", so restart is those two spec edits;
  if the stop does not finish in --timeout the VM stays stopped and restart says so;
- pause / unpause: spec.paused true / false;
- resize --flavor: spec.flavor names another flavor; the VM takes its size at its next
  start (`--restart` restarts it as `restart` does), claimed on its host first.

Patches carry the resourceVersion they were computed from, so a concurrent edit makes
the API server refuse the patch (409) and the verb reads and decides again. A VM managed
by Argo CD or Flux gets a warning on stderr: their self-heal reverts imperative edits.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, get_args

from kubevisor.api.virtualmachine import RunStrategy
from kubevisor.api.wire import CLUSTER_FLAVORS, FLAVORS, LAST_RUN_STRATEGY_ANNOTATION
from kubevisor.cli import kubeapi
from kubevisor.cli import wait as waiting
from kubevisor.cli.kubeapi import VMS, CliError, Object
from kubevisor.kube.cluster import Cluster, is_conflict

RUN_STRATEGIES: tuple[str, ...] = get_args(RunStrategy)
CONFLICT_RETRIES = 5

# Marks that Argo CD or Flux owns the object: (where, key, who).
GITOPS_MARKS: Final = (
    ("label", "app.kubernetes.io/instance", "Argo CD (or Helm)"),
    ("label", "kustomize.toolkit.fluxcd.io/name", "Flux"),
    ("annotation", "argocd.argoproj.io/tracking-id", "Argo CD"),
)


@dataclass(frozen=True, slots=True)
class Change:
    """What a verb does to one version of a VM: a merge patch (None: nothing to do)."""

    patch: Object | None
    done: str
    """Past tense for the output line: "stopped (runStrategy Always -> Halted)"."""


def _spec(vm: Object) -> Object:
    return dict(vm.get("spec") or {})


def _conditional(vm: Object, patch: Object) -> Object:
    """`patch` made conditional on the version it was computed from."""
    version = (vm.get("metadata") or {}).get("resourceVersion")
    meta = dict(patch.get("metadata") or {})
    if version:
        meta["resourceVersion"] = version
    return {**patch, "metadata": meta} if meta else patch


def stop_change(vm: Object) -> Change:
    current = str(_spec(vm).get("runStrategy") or "Always")
    if current == "Halted":
        return Change(None, "unchanged (runStrategy is already Halted)")
    patch = {
        "metadata": {"annotations": {LAST_RUN_STRATEGY_ANNOTATION: current}},
        "spec": {"runStrategy": "Halted"},
    }
    return Change(_conditional(vm, patch), f"stopped (runStrategy {current} -> Halted)")


def start_change(vm: Object) -> Change:
    current = str(_spec(vm).get("runStrategy") or "Always")
    if current != "Halted":
        return Change(None, f"unchanged (runStrategy is {current}, not Halted)")
    annotations = (vm.get("metadata") or {}).get("annotations") or {}
    saved = annotations.get(LAST_RUN_STRATEGY_ANNOTATION)
    wanted = saved if saved in RUN_STRATEGIES and saved != "Halted" else "Always"
    patch: Object = {"spec": {"runStrategy": wanted}}
    if saved is not None:
        patch["metadata"] = {"annotations": {LAST_RUN_STRATEGY_ANNOTATION: None}}
    return Change(_conditional(vm, patch), f"started (runStrategy Halted -> {wanted})")


def pause_change(vm: Object, *, paused: bool) -> Change:
    if bool(_spec(vm).get("paused")) == paused:
        return Change(None, f"unchanged (spec.paused is already {str(paused).lower()})")
    patch = {"spec": {"paused": paused}}
    return Change(_conditional(vm, patch), "paused" if paused else "unpaused")


def flavor_change(vm: Object, *, flavor: str, kind: str) -> Change:
    current = _spec(vm).get("flavor") or {}
    wanted = {"name": flavor, "kind": kind}
    if {"kind": CLUSTER_FLAVORS.kind, **current} == wanted:
        return Change(None, f"unchanged (flavor is already {kind} {flavor})")
    before = current.get("name") or "none"
    done = f"resized (flavor {before} -> {flavor}; the new size applies at its next start)"
    return Change(_conditional(vm, {"spec": {"flavor": wanted}}), done)


def gitops_manager(vm: Object) -> str | None:
    """Who reverts imperative edits of this VM, as "Flux (label ...)", or None."""
    meta = vm.get("metadata") or {}
    for where, key, who in GITOPS_MARKS:
        marks = meta.get("labels" if where == "label" else "annotations") or {}
        if key in marks:
            return f"{who} ({where} {key}={marks[key]})"
    return None


# -- effects --------------------------------------------------------------------------------


def warn_if_gitops(name: str, vm: Object) -> None:
    manager = gitops_manager(vm)
    if manager is not None:
        print(
            f"warning: virtualmachine {name} is managed by {manager}: its self-heal may "
            "revert this change; prefer changing the manifest in Git",
            file=sys.stderr,
        )


def apply(
    cluster: Cluster,
    name: str,
    decide: Callable[[Object], Change],
    *,
    dry_run: bool = False,
) -> tuple[Change, Object]:
    """Read, decide, patch; again on a conflict. Returns the change and the VM after it."""
    for _ in range(CONFLICT_RETRIES):
        vm = cluster.get(VMS, name)
        change = decide(vm)
        if change.patch is None:
            return change, vm
        warn_if_gitops(name, vm)
        try:
            return change, cluster.merge_patch(VMS, name, change.patch, dry_run=dry_run)
        except Exception as error:
            if not is_conflict(error):
                raise
    raise CliError(f"virtualmachine {name} kept changing under us; try again")


def _lifecycle(decide: Callable[[Object], Change]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        def act(cluster: Cluster) -> int:
            change, _ = apply(cluster, args.vm, decide, dry_run=args.dry_run)
            suffix = " (server dry run)" if args.dry_run and change.patch is not None else ""
            print(f"{VMS.qualified}/{args.vm} {change.done}{suffix}")
            return kubeapi.OK

        return kubeapi.with_cluster(args, act)

    return run


def run_restart(args: argparse.Namespace) -> int:
    def act(cluster: Cluster) -> int:
        _restart(cluster, args.vm, timeout=args.timeout)
        return kubeapi.OK

    return kubeapi.with_cluster(args, act)


def _restart(cluster: Cluster, name: str, *, timeout: float) -> None:
    vm = cluster.get(VMS, name)
    if str(_spec(vm).get("runStrategy") or "Always") == "Halted":
        raise CliError(
            f"virtualmachine {name} is stopped (runStrategy Halted); use `kubevisor start {name}`"
        )
    change, _ = apply(cluster, name, stop_change)
    print(f"{VMS.qualified}/{name} {change.done}")
    verdict = waiting.wait_for(cluster, name, waiting.Goal("stopped", "Stopped"), timeout=timeout)
    if verdict.state != "met":
        raise CliError(
            f"virtualmachine {name} did not stop within "
            f"{kubeapi.format_duration(timeout)} ({verdict.message}); it stays "
            f"stopped (runStrategy Halted): run `kubevisor start {name}` to start it",
            code=kubeapi.STALLED if verdict.state == "stalled" else kubeapi.FAILED,
        )
    change, _ = apply(cluster, name, start_change)
    print(f"{VMS.qualified}/{name} {change.done}")


def run_resize(args: argparse.Namespace) -> int:
    kind = FLAVORS.kind if args.namespaced else CLUSTER_FLAVORS.kind

    def act(cluster: Cluster) -> int:
        change, _ = apply(
            cluster, args.vm, lambda vm: flavor_change(vm, flavor=args.flavor, kind=kind)
        )
        print(f"{VMS.qualified}/{args.vm} {change.done}")
        if args.restart and change.patch is not None:
            _restart(cluster, args.vm, timeout=args.timeout)
        return kubeapi.OK

    return kubeapi.with_cluster(args, act)


# -- parsers --------------------------------------------------------------------------------


def _verb(
    subparsers: Any, name: str, help_: str, description: str, *, dry_run: bool = True
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = kubeapi.vm_command(subparsers, name, description, help=help_)
    if dry_run:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="send the patch as a server-side dry run: validated, not persisted",
        )
    return parser


def register(subparsers: Any) -> None:
    _verb(
        subparsers,
        "start",
        "start a stopped VM (spec.runStrategy Halted -> its previous strategy)",
        "Set spec.runStrategy from Halted back to the strategy `stop` saved in the "
        f"annotation {LAST_RUN_STRATEGY_ANNOTATION} (Always if none). A VM that is not Halted is "
        "left unchanged (exit 0).",
    ).set_defaults(func=_lifecycle(start_change))
    _verb(
        subparsers,
        "stop",
        "stop a VM (spec.runStrategy -> Halted, previous strategy saved)",
        f"Set spec.runStrategy to Halted and save the previous one in the annotation "
        f"{LAST_RUN_STRATEGY_ANNOTATION}, for `start`. Follow with "
        "`kubevisor wait VM --for stopped`.",
    ).set_defaults(func=_lifecycle(stop_change))
    restart = _verb(
        subparsers,
        "restart",
        "stop a VM, wait until it is Stopped, start it again",
        "Restart is two declarative edits: stop (runStrategy -> Halted), wait until "
        "status.phase is Stopped for that generation, then start (runStrategy back). "
        "If the VM does not stop within --timeout it stays stopped and the command "
        "fails (exit 1; 2 if the VM reports Stalled).",
        dry_run=False,
    )
    kubeapi.add_timeout(restart, default="5m", help="how long to wait for the stop")
    restart.set_defaults(func=run_restart)
    resize = _verb(
        subparsers,
        "resize",
        "give a VM another flavor (spec.flavor), applied at its next start",
        "Set spec.flavor to --flavor (a VirtualMachineClusterFlavor, or with --namespaced "
        "a VirtualMachineFlavor of the VM's namespace). The VM records the flavor at once "
        "and takes its size at its next start, which its host must have room for "
        "(ResizePending, or ResizeRefused with the figures); --restart restarts it now.",
        dry_run=False,
    )
    resize.add_argument("--flavor", required=True, help="name of the flavor")
    resize.add_argument(
        "--namespaced", action="store_true", help="a VirtualMachineFlavor of the VM's namespace"
    )
    resize.add_argument("--restart", action="store_true", help="restart the VM to apply it")
    kubeapi.add_timeout(resize, default="5m", help="with --restart: how long to wait for the stop")
    resize.set_defaults(func=run_resize)
    _verb(
        subparsers, "pause", "pause a VM's vCPUs (spec.paused: true)", "Set spec.paused to true."
    ).set_defaults(func=_lifecycle(lambda vm: pause_change(vm, paused=True)))
    _verb(
        subparsers,
        "unpause",
        "resume a paused VM (spec.paused: false)",
        "Set spec.paused to false.",
    ).set_defaults(func=_lifecycle(lambda vm: pause_change(vm, paused=False)))
