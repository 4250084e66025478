"""Command-line flags that more than one program takes, declared once.

- `add_placement`: the cluster's default allocation ratios, `--host-subset-size` and
  `--weigher-multiplier`, taken by the controller and by the CLI's placement what-ifs
  (`kubevisor explain-placement --what-if`, `kubevisor simulate`), which must place as
  the controller does; `ratios`, `scheduler_options` and `multipliers` read them back.
- `add_process`: what the agent and the controller both take as long-running processes
  (`--kubeconfig`, `--lease-namespace`, `--metrics-port`, `--log-level`);
  `start_logging` applies the last.
- `add_listener`: an HTTPS listener's port, address and key pair (the agent's serial
  console endpoint, the controller's console API).

Defaults are read from the values the options fill (`AllocationRatios`, `Options`,
`Multipliers`, the processes' `Settings` through `default`), so each lives in one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from kubevisor.api.wire import SYSTEM_NAMESPACE
from kubevisor.core.placement import weighers
from kubevisor.core.placement.capacity import AllocationRatios
from kubevisor.core.placement.scheduler import Options
from kubevisor.core.placement.weighers import Multipliers


def default(settings: type[Any], name: str) -> Any:
    """The default of field `name` of the dataclass `settings`, for the flag that sets it."""
    field = next(f for f in dataclasses.fields(settings) if f.name == name)
    if field.default is dataclasses.MISSING:
        raise ValueError(f"{settings.__name__}.{name} has no plain default")
    return field.default


def add_placement(parser: argparse.ArgumentParser, *, subset: bool = True) -> None:
    """The placement options, as a group of `parser`; `subset` adds --host-subset-size."""
    ratios = AllocationRatios()
    group = parser.add_argument_group("placement (the controller's; a what-if must match it)")
    for resource in ("cpu", "memory", "disk"):
        group.add_argument(
            f"--{resource}-ratio",
            type=float,
            default=getattr(ratios, resource),
            help=f"cluster-wide default {resource} allocation ratio (default: %(default)s)",
        )
    if subset:
        group.add_argument(
            "--host-subset-size",
            type=int,
            default=Options().host_subset_size,
            help="pick at random among the N best hosts, as Nova's option (default: %(default)s)",
        )
    group.add_argument(
        "--weigher-multiplier",
        type=weighers.multiplier,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=weighers.multipliers_help(),
    )


def ratios(args: argparse.Namespace) -> AllocationRatios:
    """The cluster-wide default ratios of `add_placement`'s options."""
    return AllocationRatios(cpu=args.cpu_ratio, memory=args.memory_ratio, disk=args.disk_ratio)


def scheduler_options(args: argparse.Namespace) -> Options:
    """The scheduler options of `add_placement(subset=True)`'s options."""
    return Options(host_subset_size=args.host_subset_size)


def multipliers(args: argparse.Namespace) -> Multipliers:
    """The weigher multipliers of `add_placement`'s options (the unnamed keep defaults)."""
    return Multipliers(**dict(args.weigher_multiplier))


def add_process(parser: argparse.ArgumentParser, *, metrics_port: int) -> None:
    """The options of a long-running kubevisor process (the agent, the controller)."""
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=Path(os.environ["KUBECONFIG"]) if os.environ.get("KUBECONFIG") else None,
        help="kubeconfig file (default: $KUBECONFIG, else the in-cluster service account)",
    )
    parser.add_argument(
        "--lease-namespace",
        default=SYSTEM_NAMESPACE,
        help="namespace of the hosts' heartbeat Leases (default: %(default)s)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=metrics_port,
        help="serve /metrics here (0: off; default: %(default)s)",
    )
    parser.add_argument("--log-level", default="INFO")


def add_listener(
    parser: argparse.ArgumentParser, title: str, *, prefix: str, serves: str
) -> argparse._ArgumentGroup:
    """A group `title` of `parser` with an HTTPS listener's options: `--PREFIX-port` (0:
    off), `--PREFIX-address`, `--PREFIX-cert`, `--PREFIX-key`; `serves` says what. The
    agent's serial console endpoint and the controller's console API; the caller adds
    how clients are checked, which differs."""
    group = parser.add_argument_group(title)
    group.add_argument(f"--{prefix}-port", type=int, default=0, help=f"{serves} here (0: off)")
    group.add_argument(f"--{prefix}-address", default="0.0.0.0", help="address to listen on")
    group.add_argument(f"--{prefix}-cert", type=Path, help="serving certificate (PEM)")
    group.add_argument(f"--{prefix}-key", type=Path, help="its private key")
    return group


def start_logging(args: argparse.Namespace) -> None:
    """Log at `add_process`'s --log-level, one format for both processes; their `main`
    calls it once before running."""
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
