"""`kubevisor-controller`: placement, VM lifecycle above the hosts, host judgement.

Runs kopf with peering: replicas with distinct priorities (default: derived from the pod
name) see each other, and only the highest one handles events while the others stay
frozen, so two replicas never both place.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import socket
import zlib
from collections.abc import Sequence
from pathlib import Path

import kopf

from kubevisor import flags, metrics
from kubevisor.api.wire import CONTROLLER
from kubevisor.console import apiserver, tls
from kubevisor.core import selffence
from kubevisor.core.migration import Limits
from kubevisor.handlers import operator
from kubevisor.handlers.controller import Controller, Settings
from kubevisor.kube.client import Kube

MIGRATION_LIMITS = (
    ("--max-migrations", "per_cluster", "live migrations at once, cluster-wide"),
    ("--max-outbound-migrations", "outbound_per_host", "at once from one host"),
    ("--max-inbound-migrations", "inbound_per_host", "at once to one host"),
)
"""(flag, its `core.migration.Limits` field for the default, help) of each migration limit."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kubevisor-controller",
        description="Place VirtualMachines on HypervisorHosts and keep their status honest.",
    )
    defaults = Settings()
    flags.add_process(parser, metrics_port=9090)
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=defaults.heartbeat_timeout,
        help="seconds without a Lease renewal before a host is NotReady "
        "(default: the Lease's leaseDurationSeconds)",
    )
    flags.add_placement(parser)
    for flag, field, help in MIGRATION_LIMITS:
        default = getattr(defaults.migration_limits, field)
        parser.add_argument(flag, type=int, default=default, help=help)
    parser.add_argument(
        "--failover-grace",
        type=float,
        default=defaults.failover_grace,
        help="seconds a host may be NotReady before its VMs are started elsewhere "
        "(negative: never; see the README on split brain). Never sooner than the host "
        "agent's self-fence deadline (its status.selfFence) plus --fence-margin after its "
        "last renewal: where the grace is shorter, the host's Ready condition says so",
    )
    parser.add_argument(
        "--fence-margin",
        type=float,
        default=selffence.DEFAULT_MARGIN,
        help="seconds added to an agent's self-fence deadline before its VMs may start "
        "elsewhere: the time its destroys take and the clocks' skew",
    )
    parser.add_argument(
        "--power-fence-timeout",
        type=float,
        default=defaults.power_fence_timeout,
        help="seconds one power fence of a lost host with spec.fencing may take, from the "
        "first request to its BMC until the BMC reports power Off; a fence that takes longer "
        "failed (condition FencingFailed) and blocks the host's failover until one succeeds",
    )
    parser.add_argument(
        "--resync-interval",
        type=float,
        default=defaults.resync_interval,
        help="seconds between two resyncs of every VM, host and MigrationJob from fresh "
        "listings: the longest a lost watch event can delay a VM",
    )
    parser.add_argument("--peering", default="kubevisor", help="kopf peering object name")
    parser.add_argument(
        "--standalone", action="store_true", help="no peering (a single replica only)"
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority (default: from the pod/host name; replicas must differ)",
    )
    parser.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8080/healthz")
    api = flags.add_listener(
        parser,
        "console API (aggregated: v1alpha1.subresources.kubevisor.io)",
        prefix="console-api",
        serves="serve the console API",
    )
    api.add_argument(
        "--requestheader-client-ca",
        type=Path,
        help="CA of kube-apiserver's front-proxy client certificate (its "
        "--requestheader-client-ca-file; default: read it, the allowed names and the header "
        "names from ConfigMap kube-system/extension-apiserver-authentication)",
    )
    api.add_argument(
        "--requestheader-allowed-names",
        default=None,
        help="comma-separated CommonNames of that certificate (empty: any; default: "
        "front-proxy-client with --requestheader-client-ca, else the ConfigMap's)",
    )
    api.add_argument(
        "--console-client-cert", type=Path, help="client certificate presented to the agents"
    )
    api.add_argument("--console-client-key", type=Path, help="its private key")
    api.add_argument("--console-agent-ca", type=Path, help="CA of the agents' serving certificates")
    api.add_argument(
        "--console-agent-server-name",
        help="name the agents' serving certificates carry (one certificate for all agents); "
        "default: check each agent's certificate for the address it is dialled at",
    )
    args = parser.parse_args(argv)
    needed = (
        "console_api_cert",
        "console_api_key",
        "console_client_cert",
        "console_client_key",
        "console_agent_ca",
    )
    missing = [f"--{n.replace('_', '-')}" for n in needed if getattr(args, n) is None]
    if args.console_api_port and missing:
        parser.error(f"--console-api-port needs {', '.join(missing)}")
    if args.fence_margin < 0:
        parser.error("--fence-margin must not be negative")
    if args.power_fence_timeout <= 0:
        parser.error(f"--power-fence-timeout must be positive, not {args.power_fence_timeout:g}")
    return args


async def serve_console_api(args: argparse.Namespace) -> apiserver.Server | None:
    if not args.console_api_port:
        return None
    # Its own client: the console API is a separate server in this process.
    cluster = await Kube.connect(args.kubeconfig)
    client_ca: Path | str
    if args.requestheader_client_ca is not None:
        client_ca = args.requestheader_client_ca
        requestheader = apiserver.RequestHeader(
            allowed_names=apiserver.allowed_names(
                "front-proxy-client"
                if args.requestheader_allowed_names is None
                else args.requestheader_allowed_names
            )
        )
    else:
        client_ca, requestheader = apiserver.requestheader_from(
            await cluster.authentication_config()
        )
        if args.requestheader_allowed_names is not None:
            requestheader = dataclasses.replace(
                requestheader,
                allowed_names=apiserver.allowed_names(args.requestheader_allowed_names),
            )
    return await apiserver.Server.start(
        cluster=cluster,
        address=args.console_api_address,
        port=args.console_api_port,
        serving=tls.server_context(
            cert=args.console_api_cert,
            key=args.console_api_key,
            client_ca=client_ca,
            required=False,
        ),
        to_agents=tls.client_context(
            ca=args.console_agent_ca, cert=args.console_client_cert, key=args.console_client_key
        ),
        agent_server_name=args.console_agent_server_name,
        requestheader=requestheader,
    )


def default_priority() -> int:
    """Distinct per replica without configuration: a hash of the pod's name."""
    name = os.environ.get("POD_NAME") or socket.gethostname()
    return 100 + zlib.crc32(name.encode()) % 900


async def run(args: argparse.Namespace) -> None:
    if args.kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(args.kubeconfig)  # kopf's own login reads it
    metrics.serve(args.metrics_port)
    kube = await Kube.connect(args.kubeconfig)
    kube.field_manager = CONTROLLER
    controller = Controller(
        settings=Settings(
            lease_namespace=args.lease_namespace,
            heartbeat_timeout=args.heartbeat_timeout,
            ratios=flags.ratios(args),
            options=flags.scheduler_options(args),
            multipliers=flags.multipliers(args),
            failover_grace=args.failover_grace if args.failover_grace >= 0 else None,
            resync_interval=args.resync_interval,
            fence_margin=args.fence_margin,
            power_fence_timeout=args.power_fence_timeout,
            migration_limits=Limits(
                per_cluster=args.max_migrations,
                outbound_per_host=args.max_outbound_migrations,
                inbound_per_host=args.max_inbound_migrations,
            ),
        ),
        kube=kube,
    )
    console_api = await serve_console_api(args)
    try:
        await kopf.operator(
            registry=operator.registry(lease_namespace=args.lease_namespace),
            memo=kopf.Memo(controller=controller),
            clusterwide=True,
            standalone=args.standalone,
            # A named peering is mandatory for kopf: it waits for the peering CRD.
            peering_name=None if args.standalone else args.peering,
            priority=args.priority if args.priority is not None else default_priority(),
            liveness_endpoint=args.liveness,
        )
    finally:
        if console_api is not None:
            await console_api.stop()
        await kube.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    flags.start_logging(args)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
