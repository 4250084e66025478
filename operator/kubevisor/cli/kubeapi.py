"""The CLI's side of talking to a cluster: connection flags, exit codes, one-line errors.

Every subcommand that talks to a cluster takes the connection flags of `options()`
(`--kubeconfig`, `--context`, `-n/--namespace`), gets a `Cluster` (the synchronous client
of the access layer, `kubevisor.kube.cluster`) from `connect()` and calls it. `run()` is
the one place API and configuration errors become a one-line message on stderr and exit
code 1, so no subcommand prints a traceback for an ordinary failure.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from kubevisor.api import wire
from kubevisor.kube import cluster as kube
from kubevisor.kube.cluster import Cluster

Object = dict[str, Any]

# Exit codes every subcommand shares (docs/cli.md lists them).
OK: Final = 0
FAILED: Final = 1
USAGE: Final = 2
STALLED: Final = 2  # the object reports Stalled=True: waiting longer will not help
UNAVAILABLE: Final = 3

VMS: Final = wire.VIRTUAL_MACHINES
HOSTS: Final = wire.HYPERVISOR_HOSTS
MIGRATIONS: Final = wire.MIGRATION_JOBS


class CliError(Exception):
    """A failure to report in one line on stderr with an exit code (1 unless told)."""

    def __init__(self, message: str, *, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


def options() -> argparse.ArgumentParser:
    """The connection flags, as a parent parser for every subcommand that uses a cluster."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--kubeconfig",
        help="kubeconfig file(s), ':'-separated (default: $KUBECONFIG, else ~/.kube/config)",
    )
    group.add_argument("--context", help="kubeconfig context (default: its current context)")
    group.add_argument(
        "-n",
        "--namespace",
        help="namespace (default: the context's namespace, else 'default')",
    )
    return parser


def command(subparsers: Any, name: str, description: str | None, *, help: str) -> Any:
    """A subcommand of `subparsers` that talks to a cluster: `description` (a module's
    docstring, for the commands that have one module) printed as written, and the
    connection flags of `options()`. Each command module's `register` starts with it."""
    return subparsers.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[options()],
    )


def vm_command(subparsers: Any, name: str, description: str | None, *, help: str) -> Any:
    """A `command` about one VirtualMachine: its name is the first argument (`args.vm`)."""
    parser = command(subparsers, name, description, help=help)
    parser.add_argument("vm", metavar="VM", help="VirtualMachine name")
    return parser


def check(model: type[BaseModel], body: Object) -> None:
    """Refuse a manifest the CLI built from its flags (`create vm`, `migrate`) that
    `model` does not accept: a usage error naming the first wrong field."""
    try:
        model.model_validate(body)
    except ValidationError as invalid:
        first = invalid.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CliError(f"invalid {model.__name__}: {where}: {first['msg']}", code=USAGE) from None


def connect(args: argparse.Namespace) -> Cluster:
    """A cluster from the connection flags of `options()`."""
    try:
        return Cluster.connect(
            kubeconfig=getattr(args, "kubeconfig", None),
            context=getattr(args, "context", None),
            namespace=getattr(args, "namespace", None),
        )
    except kube.KubeconfigError as error:
        raise CliError(str(error)) from error


def run(action: Callable[[], int]) -> int:
    """Call `action`, turning ordinary failures into one line on stderr and an exit code."""
    try:
        return action()
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    except Exception as error:
        if (message := kube.failure(error)) is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return FAILED


def with_cluster(args: argparse.Namespace, action: Callable[[Cluster], int]) -> int:
    """`run(action(cluster))` with a cluster from the connection flags, closed afterwards."""

    def connected() -> int:
        cluster = connect(args)
        try:
            return action(cluster)
        finally:
            cluster.close()

    return run(connected)


def parse_duration(text: str) -> float:
    """`60s`, `5m`, `1h`, `1m30s` or plain seconds, as kubectl's --timeout (argparse type)."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    stripped = text.strip()
    try:
        return _non_negative(float(stripped))
    except ValueError:
        pass
    total, number = 0.0, ""
    for char in stripped:
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total += float(number) * units[char]
            number = ""
        else:
            raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 90s, 5m, 1h)")
    if number or not stripped:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 90s, 5m, 1h)")
    return _non_negative(total)


def add_timeout(parser: argparse.ArgumentParser, *, default: str, help: str) -> None:
    """A `--timeout` of `parse_duration`'s form on `parser`, for the commands that wait;
    `default` is written as a user would write it and `help` ends by naming it."""
    parser.add_argument(
        "--timeout",
        type=parse_duration,
        default=parse_duration(default),
        help=f"{help} (default {default})",
    )


def _non_negative(seconds: float) -> float:
    if seconds < 0 or math.isnan(seconds):
        raise argparse.ArgumentTypeError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    return f"{seconds:g}s"
