"""`kubevisor dev hosts up|down|status` and `kubevisor dev guest build`.

Local libvirtd "hypervisor hosts" (kubevisor.testbed.hosts) and the tiny test guest
(kubevisor.testbed.guest), for development and for the e2e suite. `register` is called by
`kubevisor.cli.dev` with the subparsers of `kubevisor dev`; hosts live under
`<dev --state-dir>/hosts` and the guest under `<dev --state-dir>/guest`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from kubevisor.testbed import guest, hosts


def register(dev_subparsers: Any) -> None:
    """Add `hosts` and `guest` under `kubevisor dev`."""
    hosts_parser = dev_subparsers.add_parser(
        "hosts", help="local libvirtd hypervisor hosts (root; own namespaces and TCP ports)"
    )
    hosts_commands = hosts_parser.add_subparsers(
        dest="hosts_command", required=True, metavar="COMMAND"
    )
    up = hosts_commands.add_parser("up", help="start N hosts (reusing those already running)")
    up.add_argument("--count", type=int, default=2, help="how many hosts (default: %(default)s)")
    up.add_argument(
        "--base-port",
        type=int,
        default=hosts.BASE_TCP_PORT,
        help="libvirt TCP port of the first host; the others follow (default: %(default)s)",
    )
    up.set_defaults(func=_up)
    down = hosts_commands.add_parser("down", help="stop every host and everything in it")
    down.set_defaults(func=_down)
    status = hosts_commands.add_parser("status", help="list the hosts and their URIs")
    status.set_defaults(func=_status)

    guest_parser = dev_subparsers.add_parser("guest", help="the tiny busybox test guest")
    guest_commands = guest_parser.add_subparsers(
        dest="guest_command", required=True, metavar="COMMAND"
    )
    build = guest_commands.add_parser("build", help="build (or reuse) the guest kernel + initrd")
    build.set_defaults(func=_build_guest)


def _state_dir(args: argparse.Namespace) -> Path:
    state_dir = getattr(args, "state_dir", None)
    if state_dir is None:
        default = Path(tempfile.gettempdir()) / "kubevisor-dev"
        state_dir = Path(os.environ.get("KUBEVISOR_STATE_DIR", default))
    return Path(state_dir)


def _up(args: argparse.Namespace) -> int:
    try:
        started = hosts.start_hosts(
            args.count,
            state_dir=_state_dir(args) / "hosts",
            base_tcp_port=args.base_port,
            base_migration_port=hosts.BASE_MIGRATION_PORT,
        )
    except hosts.HostStartError as error:
        print(f"kubevisor dev hosts up: {error}")
        return 1
    for host in started:
        print(f"{host.name}: {host.uri} (uuid {host.uuid}, logs {host.log_dir})")
    print("Try: virsh -c " + started[0].uri + " list --all" if started else "No hosts.")
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = hosts.stop_hosts(_state_dir(args) / "hosts")
    print(f"stopped {', '.join(h.name for h in stopped)}" if stopped else "no host was running")
    return 0


def _status(args: argparse.Namespace) -> int:
    listed = hosts.list_hosts(_state_dir(args) / "hosts")
    for line in hosts.format_hosts(listed):
        print(line)
    if not listed:
        print("no hosts; start some with: kubevisor dev hosts up --count 2")
    return 0


def _build_guest(args: argparse.Namespace) -> int:
    try:
        built = guest.build_guest(_state_dir(args) / "guest")
    except guest.GuestBuildError as error:
        print(f"kubevisor dev guest build: {error}")
        return 1
    print(f"kernel  {built.kernel}")
    print(f"initrd  {built.initrd}")
    print(f"cmdline {built.cmdline}")
    return 0
