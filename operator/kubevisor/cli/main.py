"""Entry point of the `kubevisor` command (and of the kubectl plugin `kubectl-kubevisor`).

Each subcommand lives in its own module of this package and exposes
`register(subparsers)`, which adds its parser and sets `func` to a callable taking the
parsed arguments and returning the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from kubevisor.cli import (
    console,
    crds,
    create,
    diagnose,
    evacuate,
    hosts,
    migrate,
    placement,
    simulate,
    snapshot,
    top,
    vm,
    vnc,
    wait,
)

try:
    from kubevisor.cli import dev
except ModuleNotFoundError as missing:
    # Installed from the wheel, which leaves the testbed out: no `kubevisor dev`, which
    # runs from a checkout (`make up`).
    if missing.name is None or not missing.name.startswith("kubevisor.testbed"):
        raise
    DEV: tuple[ModuleType, ...] = ()
else:
    DEV = (dev,)

SUBCOMMANDS = (
    *DEV,
    crds,
    simulate,
    vm,
    migrate,
    wait,
    hosts,
    top,
    evacuate,
    placement,
    create,
    console,
    diagnose,
    vnc,
    snapshot,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubevisor",
        description="Run virtual machines as Kubernetes custom resources.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
