"""`kubevisor dev fleet --hosts N`: N hollow hosts in this process (`agent.fleet`).

Each hollow host is the real agent on an in-memory hypervisor; all of them share one event
loop and one API client. They talk to the local stack's API server (`kubevisor dev up
--control-plane-only`) or the one `--kubeconfig` names, and run until SIGTERM/SIGINT.
Once every host is ready the command prints one line, `fleet: N hosts ready in S s, RSS M
MiB (B MiB before the hosts: P MiB per host)`, which `bench/scale.py` waits for and reads.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any

from kubevisor.agent import fleet
from kubevisor.kube.client import Kube
from kubevisor.testbed import controlplane, procfs


def register(dev_subparsers: Any) -> None:
    """Add `fleet` under `kubevisor dev`."""
    parser = dev_subparsers.add_parser(
        "fleet",
        help="run N hollow hosts (real agents on in-memory hypervisors) in one process",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--hosts", type=int, default=10, help="how many (default: %(default)s)")
    parser.add_argument(
        "--prefix", default="hollow-", help="host name prefix (default: %(default)s)"
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="the cluster to register with (default: the local stack's in --state-dir)",
    )
    parser.add_argument("--lease-duration", type=int, help="seconds (default: the agent's default)")
    parser.add_argument("--log-level", default="WARNING", help="default: %(default)s")
    parser.set_defaults(func=_fleet)


def _kubeconfig(args: argparse.Namespace) -> Path:
    if args.kubeconfig is not None:
        return Path(args.kubeconfig)
    plane = controlplane.load(args.state_dir)
    if plane is None:
        raise SystemExit(
            f"no local stack runs in {args.state_dir}: start one with "
            "`kubevisor dev up --control-plane-only`, or pass --kubeconfig"
        )
    return plane.kubeconfig


def _fleet(args: argparse.Namespace) -> int:
    if args.hosts < 1:
        raise SystemExit("--hosts must be at least 1")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_run(args, _kubeconfig(args)))
    return 0


async def _run(args: argparse.Namespace, kubeconfig: Path) -> None:
    before = procfs.rss_bytes("self") / 2**20  # the process with no host yet
    kube = await Kube.connect(kubeconfig, connections=fleet.connections(args.hosts))
    names = fleet.host_names(args.prefix, args.hosts)
    agents = fleet.agents(
        names,
        kube=kube,
        state_dir=Path(args.state_dir) / "fleet",
        lease_duration=args.lease_duration,
    )
    started = time.monotonic()

    def ready(count: int) -> None:
        rss = procfs.rss_bytes("self") / 2**20
        print(
            f"fleet: {count} hosts ready in {time.monotonic() - started:.1f} s, RSS {rss:.1f} MiB"
            f" ({before:.1f} MiB before the hosts: {(rss - before) / count:.2f} MiB per host)",
            flush=True,
        )

    task = asyncio.create_task(fleet.run(agents, ready=ready))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        await kube.close()
