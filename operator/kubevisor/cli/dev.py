"""`kubevisor dev ...`: the local stack for development, on this machine.

`kubevisor dev up` starts a real kube-apiserver + etcd on 127.0.0.1 with kubevisor's CRDs
installed and prints the KUBECONFIG to use; `kubevisor dev down` stops it. The binaries
are built once from Go modules by `hack/controlplane/build.sh` (see README).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from kubevisor.cli import dev_hosts
from kubevisor.testbed import controlplane


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
    up = commands.add_parser("up", help="start the control plane with the CRDs installed")
    up.set_defaults(func=_up)
    down = commands.add_parser("down", help="stop everything `dev up` started")
    down.set_defaults(func=_down)
    status = commands.add_parser("status", help="say what runs")
    status.set_defaults(func=_status)


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
    plane = controlplane.load(state_dir)
    if plane is None:
        plane = controlplane.start(
            bin_dir=controlplane_bin(),
            state_dir=state_dir,
            crd_paths=[repo_root() / "deploy" / "crds"],
        )
        print(f"kube-apiserver {plane.version} is ready at {plane.server}, CRDs installed.")
    else:
        print(f"kube-apiserver {plane.version} already runs at {plane.server}.")
    print()
    print("Point kubectl at it:")
    print(f"  export KUBECONFIG={plane.kubeconfig}")
    print(f"  export PATH={plane.bin_dir}:$PATH   # kubectl {plane.version}")
    print("  kubectl apply -f deploy/examples/ && kubectl get vm,hvh,vmmig")
    print("Stop it with: make down")
    return 0


def _down(args: argparse.Namespace) -> int:
    controlplane.stop(args.state_dir)
    print(f"stopped the local stack in {args.state_dir}")
    return 0


def _status(args: argparse.Namespace) -> int:
    plane = controlplane.load(args.state_dir)
    if plane is None:
        print("nothing runs")
        return 1
    print(f"kube-apiserver {plane.version} at {plane.server}; KUBECONFIG={plane.kubeconfig}")
    return 0
