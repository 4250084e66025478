"""`kubevisor migrate VM`: migrate a VM (live, or `--cold`) by creating a MigrationJob;
`--cancel JOB`.

The command only creates a MigrationJob (metadata.generateName VM-migration-, or --name)
or sets `spec.cancel: true` on one: the controller and the agents do the migration and
report it in the job's status, which `--wait` follows.

  kubevisor migrate db-0 --to hv-b --bandwidth 200 --post-copy --wait
  kubevisor migrate ct-1 --cold --wait   # shut down, copy its local disks, boot on the target
  kubevisor migrate --cancel db-0-migration-x7k2p

--dry-run prints the manifest instead, without contacting the cluster, for committing to
Git (GitOps tools need a fixed name: use --name). --wait prints the job's phase and
progress (percent done, data remaining) on stderr as they change, until a terminal phase.

Exit codes: 0 created / cancel requested; with --wait 0 when the job Succeeded (after
--cancel: when it was Cancelled); 1 Failed, Cancelled, deleted, timed out, not found or
an API error, with the reason on stderr; 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import yaml

from kubevisor.api.migrationjob import TERMINAL_PHASES, MigrationJob
from kubevisor.api.wire import Resource
from kubevisor.cli import kubeapi
from kubevisor.cli.kubeapi import HOSTS, MIGRATIONS, VMS, CliError, Object
from kubevisor.kube.cluster import Cluster

Wanted = Literal["Succeeded", "Cancelled"]

# Flags that shape a new job, so they make no sense with --cancel.
CREATE_FLAGS = (
    ("to", "--to"),
    ("name", "--name"),
    ("bandwidth", "--bandwidth"),
    ("post_copy", "--post-copy"),
    ("auto_converge", "--auto-converge"),
    ("cold", "--cold"),
    ("dry_run", "--dry-run"),
)


def bandwidth(text: str) -> int:
    """The --bandwidth value, MiB/s (an argparse type: a bad one is a usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid bandwidth {text!r}: MiB/s, e.g. 200") from None
    if value < 0:
        raise argparse.ArgumentTypeError("bandwidth cannot be negative (0: unlimited)")
    return value


def usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with this combination of flags, or None."""
    if args.cancel is not None:
        if args.vm is not None:
            return "give either VM (to migrate it) or --cancel JOB, not both"
        # `is`, not truthiness: --bandwidth 0 (unlimited) is a value given.
        given = [
            flag
            for attr, flag in CREATE_FLAGS
            if getattr(args, attr) is not None and getattr(args, attr) is not False
        ]
        if given:
            return f"{', '.join(given)} cannot be used with --cancel"
        if args.output in ("yaml", "json"):
            return "-o yaml|json cannot be used with --cancel"
        return None
    if args.vm is None:
        return "a VM to migrate (or --cancel JOB) is required"
    if args.dry_run and args.wait:
        return "--wait makes no sense with --dry-run"
    if args.cold and (args.post_copy or args.auto_converge):
        return "--post-copy and --auto-converge apply to live migrations, not --cold"
    return None


def manifest(
    vm: str,
    *,
    namespace: str | None,
    target: str | None,
    name: str | None,
    options: Object | None = None,
    cold: bool = False,
) -> Object:
    """A MigrationJob for `vm`, validated by the API model (generateName unless `name`).

    Only the options given are written; the CRD's defaults fill in the rest on the server.
    """
    metadata: Object = {"name": name} if name else {"generateName": f"{vm}-migration-"}
    if namespace:
        metadata["namespace"] = namespace
    spec: Object = {"vm": vm}
    if target:
        spec["targetHost"] = target
    if cold:
        spec["mode"] = "Cold"
    if options:
        spec["options"] = options
    kubeapi.check(MigrationJob, {"metadata": metadata, "spec": spec})
    return {
        "apiVersion": MigrationJob.model_fields["api_version"].default,
        "kind": MigrationJob.model_fields["kind"].default,
        "metadata": metadata,
        "spec": spec,
    }


def options(*, bandwidth_mibps: int | None, post_copy: bool, auto_converge: bool) -> Object:
    """spec.options from the flags: only those given (unset flags leave the CRD's defaults)."""
    chosen: Object = {}
    if bandwidth_mibps is not None:
        chosen["bandwidthMiBps"] = bandwidth_mibps
    if auto_converge:
        chosen["autoConverge"] = True
    if post_copy:
        chosen["postCopy"] = True
    return chosen


@dataclass(frozen=True, slots=True)
class CancelChange:
    """What `--cancel` does to one version of a job: a merge patch (None: nothing to do)."""

    patch: Object | None
    done: str


def cancel_change(job: Object) -> CancelChange:
    status = job.get("status") or {}
    phase = status.get("phase")
    if phase in TERMINAL_PHASES:
        return CancelChange(None, f"unchanged (already {phase})")
    if (job.get("spec") or {}).get("cancel"):
        return CancelChange(None, "unchanged (cancel already requested)")
    return CancelChange({"spec": {"cancel": True}}, "cancel requested")


# -- following a job ---------------------------------------------------------------------------


def size(count: int) -> str:
    """Bytes in binary units with one decimal: 1.5 GiB, 300.0 MiB, 512 B."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def progress_line(job: Object) -> str:
    """One line on where the job stands: phase, hosts, and the transfer's progress."""
    status = job.get("status") or {}
    parts = [str(status.get("phase") or "Pending")]
    source, target = status.get("source"), status.get("target")
    if source or target:
        parts.append(f"{source or '?'} -> {target or '?'}")
    progress = status.get("progress") or {}
    done = []
    if progress.get("percent") is not None:
        done.append(f"{progress['percent']}%")
    if progress.get("dataRemaining") is not None:
        remaining = f"{size(int(progress['dataRemaining']))} remaining"
        if progress.get("dataTotal"):
            remaining += f" of {size(int(progress['dataTotal']))}"
        done.append(remaining)
    if progress.get("iteration"):
        done.append(f"pass {progress['iteration']}")
    if (status.get("transfer") or {}).get("postCopy"):
        done.append("post-copy")
    if done:
        parts.append(", ".join(done))
    return ": ".join(parts)


@dataclass(frozen=True, slots=True)
class Outcome:
    code: int
    message: str
    """The line to print: on stdout when code is 0, else on stderr after `error: `."""


def outcome(name: str, job: Object, wanted: Wanted) -> Outcome | None:
    """How one version of job `name` ends the wait for `wanted`, or None if it does not."""
    status = job.get("status") or {}
    phase = status.get("phase")
    if phase not in TERMINAL_PHASES:
        return None
    if phase == wanted:
        line = f"{MIGRATIONS.qualified}/{name} {phase}"
        if phase == "Succeeded":
            if status.get("source") and status.get("target"):
                line += f" from {status['source']} to {status['target']}"
            detail = (status.get("transfer") or {}).get("message")
        else:
            detail = status.get("reason")
        return Outcome(kubeapi.OK, line + (f" ({detail})" if detail else ""))
    if phase == "Succeeded":
        return Outcome(
            kubeapi.FAILED, f"migrationjob {name} Succeeded before the cancel took effect"
        )
    reason = status.get("reason") or "no reason given"
    return Outcome(kubeapi.FAILED, f"migrationjob {name} {phase}: {reason}")


class Observer(Protocol):
    """What following a job needs of the cluster (kube.cluster.Cluster; a fake in tests)."""

    def observe(
        self, resource: Resource, name: str, *, timeout: float
    ) -> Iterator[Object | None]: ...


def follow(
    cluster: Observer,
    name: str,
    *,
    wanted: Wanted,
    timeout: float,
    say: Callable[[str], None],
) -> Outcome:
    """Watch job `name` until a terminal phase, its deletion or `timeout`; `say` each new
    progress line on the way."""
    last = ""
    for job in cluster.observe(MIGRATIONS, name, timeout=timeout):
        if job is None:
            return Outcome(kubeapi.FAILED, f"migrationjob {name} was deleted while waiting")
        line = progress_line(job)
        ended = outcome(name, job, wanted)
        if ended is not None:
            return ended
        if line != last:
            say(f"migrationjob {name}: {line}")
            last = line
    return Outcome(
        kubeapi.FAILED,
        f"timed out after {kubeapi.format_duration(timeout)} waiting for migrationjob {name} "
        f"to finish ({last or 'no status'})",
    )


# -- effects ---------------------------------------------------------------------------------


def _print_object(obj: Object, output: str) -> None:
    if output == "json":
        print(json.dumps(obj, indent=2, sort_keys=False))
    else:
        sys.stdout.write(yaml.safe_dump(obj, sort_keys=False))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _finish(result: Outcome) -> int:
    if result.code == kubeapi.OK:
        print(result.message)
        return kubeapi.OK
    raise CliError(result.message, code=result.code)


def run(args: argparse.Namespace) -> int:
    problem = usage_error(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return kubeapi.USAGE
    if args.cancel is not None:
        return kubeapi.with_cluster(args, lambda cluster: cancel(cluster, args))
    if args.dry_run:

        def dry() -> int:
            body = _requested(args, namespace=args.namespace)
            _print_object(body, args.output or "yaml")
            return kubeapi.OK

        return kubeapi.run(dry)

    def act(cluster: Cluster) -> int:
        body = _requested(args, namespace=cluster.namespace)
        cluster.get(VMS, args.vm)  # a clear "not found" before creating anything
        if args.to:
            cluster.get(HOSTS, args.to)
        created = cluster.create(MIGRATIONS, body)
        job = str(created["metadata"]["name"])
        if args.output in ("yaml", "json"):
            _print_object(created, args.output)
        else:
            print(f"{MIGRATIONS.qualified}/{job} created", flush=True)
        if not args.wait:
            return kubeapi.OK
        return _finish(follow(cluster, job, wanted="Succeeded", timeout=args.timeout, say=_stderr))

    return kubeapi.with_cluster(args, act)


def _requested(args: argparse.Namespace, *, namespace: str | None) -> Object:
    """The MigrationJob the flags ask for."""
    chosen = options(
        bandwidth_mibps=args.bandwidth, post_copy=args.post_copy, auto_converge=args.auto_converge
    )
    return manifest(
        args.vm,
        namespace=namespace,
        target=args.to,
        name=args.name,
        options=chosen,
        cold=args.cold,
    )


def cancel(cluster: Cluster, args: argparse.Namespace) -> int:
    name = args.cancel
    change = cancel_change(cluster.get(MIGRATIONS, name))
    if change.patch is not None:
        cluster.merge_patch(MIGRATIONS, name, change.patch)
    print(f"{MIGRATIONS.qualified}/{name} {change.done}", flush=True)
    if not args.wait:
        return kubeapi.OK
    return _finish(follow(cluster, name, wanted="Cancelled", timeout=args.timeout, say=_stderr))


def register(subparsers: Any) -> None:
    parser = kubeapi.command(
        subparsers,
        "migrate",
        __doc__,
        help="migrate a VM (live or --cold): create a MigrationJob (or --cancel JOB)",
    )
    parser.add_argument("vm", metavar="VM", nargs="?", help="VirtualMachine name")
    parser.add_argument("--to", metavar="HOST", help="target HypervisorHost (default: placement)")
    parser.add_argument(
        "--bandwidth",
        type=bandwidth,
        metavar="MiBps",
        help="bandwidth cap in MiB/s (spec.options.bandwidthMiBps; 0: unlimited)",
    )
    parser.add_argument(
        "--post-copy",
        action="store_true",
        help="allow the switch to post-copy when pre-copy does not converge",
    )
    parser.add_argument(
        "--auto-converge",
        action="store_true",
        help="throttle the guest's vCPUs when it dirties memory faster than it is copied",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="move it cold (spec.mode: Cold): shut down, copy its local disks, boot there",
    )
    parser.add_argument("--name", help="name of the MigrationJob (default: generated)")
    parser.add_argument(
        "--cancel",
        metavar="JOB",
        help="cancel MigrationJob JOB (spec.cancel: true) instead of creating one",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the manifest, create nothing")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="follow the job's phase and progress until it ends",
    )
    kubeapi.add_timeout(parser, default="10m", help="with --wait: give up after this long")
    parser.add_argument(
        "-o",
        "--output",
        choices=("name", "yaml", "json"),
        help="name (default), or the whole object as yaml/json (yaml with --dry-run)",
    )
    parser.set_defaults(func=run)
