"""`kubevisor dev ...`: the local stack for development, on this machine.

`kubevisor dev up` starts a real kube-apiserver + etcd on 127.0.0.1 with kubevisor's CRDs,
two local libvirtd hosts with QEMU (or libvirt's test driver where libvirtd cannot run),
the controller and one agent per host, applies deploy/examples/, waits until every VM
has settled, and prints them; `kubevisor dev down` stops everything. The control-plane
binaries are built once from Go modules by `hack/controlplane/build.sh` (see README).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from kubevisor.cli import dev_fleet, dev_hosts
from kubevisor.testbed import controlplane, guest, hosts, stack
from kubevisor.testbed.guestshell import GuestCommandError, GuestShell


def register(subparsers: Any) -> None:
    dev = subparsers.add_parser("dev", help="run the local development stack")
    dev.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="where the local stack keeps its data, logs and kubeconfig "
        "(default: $KUBEVISOR_STATE_DIR or %(default)s)",
    )
    commands = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    dev_hosts.register(commands)
    dev_fleet.register(commands)
    up = commands.add_parser("up", help="start the whole local stack and apply deploy/examples/")
    up.add_argument("--no-examples", action="store_true", help="do not apply deploy/examples/")
    up.add_argument(
        "--control-plane-only", action="store_true", help="only kube-apiserver + etcd + CRDs"
    )
    up.add_argument("--timeout", type=float, default=300, help="seconds to wait for the VMs")
    up.set_defaults(func=_up)
    down = commands.add_parser("down", help="stop everything `dev up` started")
    down.set_defaults(func=_down)
    status = commands.add_parser("status", help="say what runs")
    status.set_defaults(func=_status)
    run = commands.add_parser(
        "exec",
        help="run a shell command in a VM's tiny guest (through its serial console)",
        description="Run COMMAND in the tiny guest of VM (busybox sh: ping, wget, ip, ...) "
        "and print its output; exits with its exit code. No login and no network path to "
        "the guest needed: the command goes through the guest's serial console "
        "(docs/testbed-network.md).",
    )
    run.add_argument("vm", metavar="VM")
    run.add_argument("-n", "--namespace", default="default")
    run.add_argument("--timeout", type=float, default=60, help="seconds to wait for it")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    run.set_defaults(func=_exec)


def default_state_dir() -> Path:
    return Path(
        os.environ.get("KUBEVISOR_STATE_DIR", Path(tempfile.gettempdir()) / "kubevisor-dev")
    )


def repo_root() -> Path:
    """The source checkout this package runs from (the dev stack needs its hack/ and deploy/)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "hack" / "controlplane" / "build.sh").exists():
            return parent
    raise SystemExit("kubevisor dev needs a source checkout (hack/controlplane/build.sh not found)")


def controlplane_bin() -> Path:
    """The directory holding kube-apiserver, etcd and kubectl; builds them on first use."""
    if env := os.environ.get("KUBEVISOR_CONTROLPLANE_BIN"):
        return Path(env)
    build = repo_root() / "hack" / "controlplane" / "build.sh"
    out = subprocess.run([str(build)], check=True, stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def _up(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    root = repo_root()
    if args.control_plane_only:
        plane = controlplane.load(state_dir) or controlplane.start(
            bin_dir=controlplane_bin(), state_dir=state_dir, crd_paths=[root / "deploy" / "crds"]
        )
        print(f"kube-apiserver {plane.version} is ready at {plane.server}, CRDs installed.")
    else:
        plane = stack.start(
            bin_dir=controlplane_bin(),
            state_dir=state_dir,
            crd_paths=[root / "deploy" / "crds"],
            say=print,
        )
        if not args.no_examples:
            plane.kubectl("apply", "-f", str(root / "deploy" / "examples"))
            served = state_dir / "examples"
            if served.is_dir():
                plane.kubectl("apply", "-f", str(served))
                print(f"applied deploy/examples/ and {served}/; waiting for the VMs to settle ...")
            else:
                print("applied deploy/examples/; waiting for the VMs to settle ...")
            settled = _wait_settled(plane, timeout=args.timeout)
            held = _wait_leases(plane, state_dir, timeout=LEASE_WAIT)
            print(plane.kubectl("get", "vm,hvh", "-o", "wide").stdout)
            if not settled:
                print(f"some VMs had not settled after {args.timeout:.0f}s (see above)")
            for line in held:
                print(line)
    print("Point kubectl at it:")
    print(f"  export KUBECONFIG={plane.kubeconfig}")
    print(f"  export PATH={plane.bin_dir}:$PATH   # kubectl {plane.version}")
    print("  kubectl get vm,hvh,vmmig -o wide")
    print(f"Logs: {state_dir / 'logs'}.  Stop everything with: make down")
    return 0


SETTLED = {"Running", "Unschedulable", "Stopped", "Paused", "Failed"}


def _wait_settled(plane: controlplane.ControlPlane, *, timeout: float) -> bool:
    """Whether every VM reached a phase it stays in by itself, before `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = json.loads(plane.kubectl("get", "vm", "-A", "-o", "json").stdout)["items"]
        phases = [(i.get("status") or {}).get("phase") for i in items]
        if phases and all(p in SETTLED for p in phases):
            return True
        time.sleep(1.0)
    return False


LEASE_WAIT = 60.0
"""Seconds to wait, once the VMs settled, for their guests to hold their addresses."""


def _wait_leases(plane: controlplane.ControlPlane, state_dir: Path, *, timeout: float) -> list[str]:
    """Wait until the guest of every Running VM with an address holds it by DHCP (its
    serial console says `kubevisor-net bound ...`); a line per such VM saying what its
    guest holds (or that it holds nothing yet)."""
    deadline = time.monotonic() + timeout
    while True:
        items = json.loads(plane.kubectl("get", "vm", "-A", "-o", "json").stdout)["items"]
        said = [_lease(vm, state_dir) for vm in items]
        lines = [line for line, _ in filter(None, said)]
        if all(held for _, held in filter(None, said)) or time.monotonic() >= deadline:
            return lines
        time.sleep(1.0)


def _lease(vm: dict[str, Any], state_dir: Path) -> tuple[str, bool] | None:
    """What the guest of `vm` holds by DHCP, as a line, and whether it holds the address
    its status records; None for a VM without an address or not running."""
    status = vm.get("status") or {}
    interfaces = status.get("interfaces") or []
    if status.get("phase") != "Running" or not status.get("host") or not interfaces:
        return None
    name, uid = vm["metadata"]["name"], vm["metadata"]["uid"]
    wanted = f"{interfaces[0]['ipAddresses'][0]}" if interfaces[0]["ipAddresses"] else "?"
    serial = state_dir / "agents" / status["host"] / "vms" / uid / "serial.log"
    text = serial.read_text(errors="replace") if serial.exists() else ""
    bound = [e for e in guest.net_events(text) if e.interface == interfaces[0]["name"]]
    if bound and bound[-1].address.split("/")[0] == wanted:
        line = f"{name}: its guest holds {bound[-1].address} on {bound[-1].interface} by DHCP"
        return f"{line} from {status['host']}", True
    return f"{name}: its guest does not hold {wanted} yet (see {serial})", False


def _exec(args: argparse.Namespace) -> int:
    plane = controlplane.load(args.state_dir)
    if plane is None:
        raise SystemExit(f"nothing runs in {args.state_dir}: make up first")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise SystemExit("no command: kubevisor dev exec VM -- COMMAND")
    got = plane.kubectl("get", "vm", args.vm, "-n", args.namespace, "-o", "json", check=False)
    if got.returncode != 0:
        raise SystemExit(got.stderr.strip())
    vm = json.loads(got.stdout)
    host = (vm.get("status") or {}).get("host")
    found = [h for h in hosts.list_hosts(args.state_dir / "hosts") if h.name == host]
    if not found:
        raise SystemExit(f"VM {args.vm} runs on no local libvirtd host (host: {host})")
    shell = GuestShell(found[0].uri, vm["metadata"]["uid"])
    try:
        result = shell.run(shlex.join(command), timeout=args.timeout)
    except GuestCommandError as error:
        raise SystemExit(str(error)) from None
    if result.output:
        print(result.output)
    return result.exit_code


def _down(args: argparse.Namespace) -> int:
    stack.stop(args.state_dir)
    print(f"stopped the local stack in {args.state_dir}")
    return 0


def _status(args: argparse.Namespace) -> int:
    plane = controlplane.load(args.state_dir)
    if plane is None:
        print("nothing runs")
        return 1
    print(f"kube-apiserver {plane.version} at {plane.server}; KUBECONFIG={plane.kubeconfig}")
    return 0
