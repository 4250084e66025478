"""`kubevisor evacuate HOST [--confirm-fenced]`: re-place every VM of a lost host now.

It sets the host's spec.evacuate (so GitOps can do the same) to a request stamped with
the current time; the controller acts on it once (`core.evacuate`): at once with
`--confirm-fenced` (the operator confirms the host is off), else once the host's agent has
fenced itself, and never while the host is Ready, which this command refuses itself too.
It then waits up to `--timeout` for the controller's outcome (status.evacuation) and
prints it; a refusal exits 1.
"""

from __future__ import annotations

import argparse
import datetime
import time
from typing import Any

from kubevisor.api import schema
from kubevisor.cli import kubeapi
from kubevisor.cli.kubeapi import HOSTS, CliError, Object
from kubevisor.kube.cluster import Cluster

POLL = 0.5
"""Seconds between reads of the host while waiting for the controller's outcome."""


def register(subparsers: Any) -> None:
    parser = kubeapi.command(
        subparsers, "evacuate", __doc__, help="re-place every VM of a lost host now"
    )
    parser.add_argument("host", help="the HypervisorHost")
    parser.add_argument(
        "--confirm-fenced",
        action="store_true",
        help="confirm the host is off (its guests are not running): move its VMs at once",
    )
    kubeapi.add_timeout(
        parser,
        default="30s",
        help="wait this long for the controller's outcome (0: do not wait)",
    )
    parser.set_defaults(func=run)


def request(host: Object, *, confirmed: bool, now: datetime.datetime) -> Object:
    """The merge patch asking to evacuate `host`; CliError while the host is Ready."""
    name = host["metadata"]["name"]
    ready = next(
        (c for c in (host.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"),
        None,
    )
    if ready is not None and ready.get("status") == "True":
        raise CliError(
            f"host {name} is Ready (its agent renews its Lease): only a lost host is "
            "evacuated; to empty a live host, set spec.maintenance"
        )
    stamp = schema.timestamp(now)
    return {"spec": {"evacuate": {"requestedAt": stamp, "confirmedFenced": confirmed}}}


def outcome(host: Object, requested_at: str) -> tuple[str, str] | None:
    """(outcome, message) the controller gave this request, once it has settled it."""
    status = (host.get("status") or {}).get("evacuation") or {}
    if status.get("requestedAt") != requested_at or status.get("outcome") == "Waiting":
        return None
    return str(status["outcome"]), str(status.get("message", ""))


def run(args: argparse.Namespace) -> int:
    def act(cluster: Cluster) -> int:
        host = cluster.get(HOSTS, args.host)
        patch = request(
            host, confirmed=args.confirm_fenced, now=datetime.datetime.now(datetime.UTC)
        )
        cluster.merge_patch(HOSTS, args.host, patch)
        stamp = patch["spec"]["evacuate"]["requestedAt"]
        print(f"evacuation of host {args.host} requested at {stamp}")
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            settled = outcome(cluster.get(HOSTS, args.host), stamp)
            if settled is not None:
                result, message = settled
                print(f"{result}: {message}")
                return kubeapi.FAILED if result == "Refused" else 0
            time.sleep(POLL)
        if args.timeout:
            print(f"no outcome yet; see status.evacuation of hypervisorhost {args.host}")
        return 0

    return kubeapi.with_cluster(args, act)
