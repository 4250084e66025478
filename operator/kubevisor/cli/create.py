"""`kubevisor create vm NAME ...`: print a VirtualMachine manifest; never applies it.

GitOps first: the manifest goes to stdout for a file in Git (or `| kubectl apply -f -`).
It is validated with the same pydantic model the operator reads VMs with, which mirrors
the CRD's CEL rules, so a manifest this prints is one the API server accepts. Only the
fields given are written; the CRD's defaults fill in the rest on the server.

Invalid combinations (e.g. --thread-policy without --dedicated, --policy without
--group) are usage errors: exit 2 with the rule that was broken.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, get_args

import yaml

from kubevisor.api.hypervisorhost import HypervisorType
from kubevisor.api.virtualmachine import (
    GroupPolicy,
    NetworkType,
    RunStrategy,
    ThreadPolicy,
    VirtualMachine,
)
from kubevisor.cli import kubeapi
from kubevisor.cli.kubeapi import CliError, Object


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values or []:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise CliError(f"{what} must be KEY=VALUE, not {value!r}", code=kubeapi.USAGE)
        pairs[key] = text
    return pairs


def _network(text: str, index: int) -> Object:
    kind, _, source = text.partition(":")
    if kind not in get_args(NetworkType):
        raise CliError(
            f"--network {text!r}: type must be one of {', '.join(get_args(NetworkType))}",
            code=kubeapi.USAGE,
        )
    network: Object = {"name": f"net{index}", "type": kind}
    if source:
        network["source"] = source
    return network


def manifest(args: argparse.Namespace) -> Object:
    """The VirtualMachine the flags describe, validated; raises CliError (exit 2) if not."""
    metadata: Object = {"name": args.name}
    if args.namespace:
        metadata["namespace"] = args.namespace
    if labels := _pairs(args.label, "--label"):
        metadata["labels"] = labels
    cpu: Object = {"vcpus": args.vcpus}
    if args.dedicated:
        cpu["policy"] = "dedicated"
    if args.thread_policy:
        cpu["threadPolicy"] = args.thread_policy
    spec: Object = {"cpu": cpu, "memory": {"size": args.memory}}
    if args.run_strategy:
        spec["runStrategy"] = args.run_strategy
    if args.hugepages:
        spec["memory"]["hugepages"] = {"pageSize": args.hugepages}
    if args.image or args.disk_size:
        disk: Object = {"name": "root"}
        if args.image:
            disk["image"] = args.image
        if args.disk_size:
            disk["size"] = args.disk_size
        spec["disks"] = [disk]
    if args.network:
        spec["networks"] = [_network(text, i) for i, text in enumerate(args.network)]
    if args.user_data:
        try:
            with open(args.user_data) as stream:
                spec["cloudInit"] = {"userData": stream.read()}
        except OSError as error:
            raise CliError(f"--user-data: {error}", code=kubeapi.USAGE) from None
    if args.hypervisor:
        one = len(args.hypervisor) == 1
        spec["hypervisor"] = {"type": args.hypervisor[0]} if one else {"types": args.hypervisor}
    placement: Object = {}
    if selector := _pairs(args.host_selector, "--host-selector"):
        placement["hostSelector"] = selector
    if args.group:
        placement["group"] = args.group
    if args.policy:
        placement["policy"] = args.policy
    if args.max_per_host is not None:
        placement["maxPerHost"] = args.max_per_host
    if placement:
        spec["placement"] = placement
    body: Object = {
        "apiVersion": VirtualMachine.model_fields["api_version"].default,
        "kind": VirtualMachine.model_fields["kind"].default,
        "metadata": metadata,
        "spec": spec,
    }
    kubeapi.check(VirtualMachine, body)
    return body


def register(subparsers: Any) -> None:
    create = subparsers.add_parser(
        "create",
        help="print a manifest for a new object (never applies it)",
        description="Print a manifest for a new object to stdout; nothing is applied.",
    )
    kinds = create.add_subparsers(dest="kind", required=True, metavar="KIND")
    parser = kinds.add_parser(
        "vm",
        help="a VirtualMachine manifest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="VirtualMachine name")
    parser.add_argument("-n", "--namespace", help="metadata.namespace (default: leave it out)")
    parser.add_argument("--vcpus", type=int, default=1, help="virtual CPUs (default 1)")
    parser.add_argument("--memory", default="1Gi", help="guest memory (default 1Gi)")
    parser.add_argument(
        "--dedicated", action="store_true", help="pin each vCPU to its own host CPU"
    )
    parser.add_argument(
        "--thread-policy", choices=get_args(ThreadPolicy), help="SMT policy (with --dedicated)"
    )
    parser.add_argument("--hugepages", choices=("2Mi", "1Gi"), help="back memory with huge pages")
    parser.add_argument(
        "--run-strategy", choices=get_args(RunStrategy), help="default: the CRD's (Always)"
    )
    parser.add_argument("--image", help="base image of the root disk (file in the host's images)")
    parser.add_argument("--disk-size", metavar="SIZE", help="root disk size, e.g. 10Gi")
    parser.add_argument(
        "--network",
        action="append",
        metavar="TYPE[:SOURCE]",
        help="a NIC: user, network:NAME or bridge:NAME (repeatable)",
    )
    parser.add_argument("--user-data", metavar="FILE", help="cloud-init user-data file")
    parser.add_argument("--group", help="server group name")
    parser.add_argument(
        "--policy", choices=get_args(GroupPolicy), help="server group policy (needs --group)"
    )
    parser.add_argument(
        "--max-per-host", type=int, help="with --policy anti-affinity: members per host"
    )
    parser.add_argument(
        "--host-selector", action="append", metavar="KEY=VALUE", help="host label (repeatable)"
    )
    parser.add_argument(
        "--hypervisor",
        action="append",
        choices=get_args(HypervisorType),
        help="run only on hosts of this hypervisor type (repeatable: any of them)",
    )
    parser.add_argument("--label", action="append", metavar="KEY=VALUE", help="VM label")
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    def act() -> int:
        body = manifest(args)
        if args.output == "json":
            print(json.dumps(body, indent=2))
        else:
            sys.stdout.write(yaml.safe_dump(body, sort_keys=False))
        return kubeapi.OK

    return kubeapi.run(act)
