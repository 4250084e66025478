"""`kubevisor wait VM --for ready|running|stopped|phase=X`: block until a VM gets there.

`ready` follows kstatus, as Flux and `kubectl wait
--for=condition=Ready` read our status: the status must reflect the current spec
(status.observedGeneration == metadata.generation), Reconciling must not be True and
Ready must be True. Every goal needs the current generation observed, so a phase left
over from before the last spec change never counts. Stalled=True (for the current
generation) is terminal: the wait ends at once with exit code 2 and its message.

Exit codes: 0 reached, 1 timed out / not found / deleted, 2 usage error or Stalled.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Literal, get_args

from kubevisor.api import conditions
from kubevisor.api.virtualmachine import Phase
from kubevisor.cli import kubeapi
from kubevisor.cli.kubeapi import VMS, CliError, Object
from kubevisor.kube.cluster import Cluster

PHASES: tuple[str, ...] = get_args(Phase)
GoalKind = Literal["ready", "running", "stopped", "phase"]
VerdictState = Literal["met", "pending", "stalled", "gone"]


@dataclass(frozen=True, slots=True)
class Goal:
    """What to wait for: Ready by kstatus, or a phase (running and stopped are phases)."""

    kind: GoalKind
    phase: str | None = None

    @property
    def text(self) -> str:
        return "be ready" if self.kind == "ready" else f"reach phase {self.phase}"


def parse_goal(text: str) -> Goal:
    """The `--for` value (an argparse type: a bad one is a usage error, exit 2)."""
    lowered = text.strip().lower()
    if lowered == "ready":
        return Goal("ready")
    if lowered == "running":
        return Goal("running", "Running")
    if lowered == "stopped":
        return Goal("stopped", "Stopped")
    if lowered.startswith("phase="):
        wanted = text.strip()[len("phase=") :]
        match = next((p for p in PHASES if p.lower() == wanted.lower()), None)
        if match is None:
            raise argparse.ArgumentTypeError(
                f"unknown phase {wanted!r}; one of {', '.join(PHASES)}"
            )
        return Goal("phase", match)
    raise argparse.ArgumentTypeError(
        f"invalid --for {text!r}: ready, running, stopped or phase=PHASE"
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    state: VerdictState
    message: str


def _condition(status: Object, type_: str) -> Object | None:
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == type_:
            return condition
    return None


def _says(condition: Object | None) -> str:
    if condition is None:
        return ""
    reason, message = condition.get("reason") or "", condition.get("message") or ""
    return f"{reason}: {message}" if reason and message else reason or message


def judge(obj: Object | None, goal: Goal) -> Verdict:
    """Where one version of a VM stands against `goal`; pure, for `wait` and `restart`."""
    if obj is None:
        return Verdict("gone", "it does not exist")
    meta: dict[str, Any] = obj.get("metadata") or {}
    status: Object = obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return Verdict("pending", "it is being deleted")
    if not status:
        return Verdict("pending", "no status yet: is the kubevisor controller running?")
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    if observed is None or (generation is not None and observed != generation):
        return Verdict(
            "pending",
            f"generation {generation} not yet observed (status.observedGeneration {observed})",
        )
    stalled = _condition(status, conditions.STALLED)
    if stalled is not None and stalled.get("status") == "True":
        return Verdict("stalled", "Stalled: " + (_says(stalled) or "no message"))
    phase = status.get("phase")
    if goal.kind == "ready":
        reconciling = _condition(status, conditions.RECONCILING)
        if reconciling is not None and reconciling.get("status") == "True":
            return Verdict("pending", f"phase {phase}, Reconciling: {_says(reconciling)}")
        ready = _condition(status, conditions.READY)
        if ready is not None and ready.get("status") == "True":
            return Verdict("met", f"phase {phase}, Ready")
        said = _says(ready) if ready is not None else "no Ready condition"
        return Verdict("pending", f"phase {phase}, Ready={ready and ready.get('status')}: {said}")
    if phase == goal.phase:
        return Verdict("met", f"phase {phase}")
    return Verdict("pending", f"phase {phase}")


def wait_for(cluster: Cluster, name: str, goal: Goal, *, timeout: float) -> Verdict:
    """Watch VM `name` until `goal` is met, it stalls, it goes away, or `timeout` passes.

    Raises CliError (exit 1) when it does not exist at the start; a timeout comes back
    as the last pending verdict.
    """
    last = Verdict("pending", "no answer from the API server yet")
    first = True
    for obj in cluster.observe(VMS, name, timeout=timeout):
        verdict = judge(obj, goal)
        if verdict.state == "gone":
            where = f"namespace {cluster.namespace}"
            if first:
                raise CliError(f'virtualmachines.kubevisor.io "{name}" not found in {where}')
            return Verdict("gone", f"virtualmachine {name} was deleted while waiting")
        first = False
        if verdict.state != "pending":
            return verdict
        last = verdict
    return last


def register(subparsers: Any) -> None:
    parser = kubeapi.vm_command(
        subparsers,
        "wait",
        __doc__,
        help="wait until a VM is ready, running, stopped or in a phase (kstatus rules)",
    )
    parser.add_argument(
        "--for",
        dest="goal",
        type=parse_goal,
        default=Goal("ready"),
        metavar="CONDITION",
        help="ready (default), running, stopped, or phase=PHASE (e.g. phase=Unschedulable)",
    )
    kubeapi.add_timeout(parser, default="60s", help="give up after this long: 90s, 5m, 1h")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    def act(cluster: Cluster) -> int:
        verdict = wait_for(cluster, args.vm, args.goal, timeout=args.timeout)
        return report(args.vm, args.goal, verdict, timeout=args.timeout)

    return kubeapi.with_cluster(args, act)


def report(name: str, goal: Goal, verdict: Verdict, *, timeout: float) -> int:
    """Print the outcome (stdout when met, stderr otherwise) and return the exit code."""
    if verdict.state == "met":
        print(f"{VMS.qualified}/{name} condition met")
        return kubeapi.OK
    if verdict.state == "stalled":
        print(f"error: virtualmachine {name} is stalled: {verdict.message}", file=sys.stderr)
        return kubeapi.STALLED
    if verdict.state == "gone":
        print(f"error: {verdict.message}", file=sys.stderr)
        return kubeapi.FAILED
    print(
        f"error: timed out after {kubeapi.format_duration(timeout)} waiting for "
        f"virtualmachine {name} to {goal.text}: {verdict.message}",
        file=sys.stderr,
    )
    return kubeapi.FAILED
