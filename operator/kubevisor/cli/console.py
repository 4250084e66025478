"""`kubevisor console VM`: attach to the guest's serial console -- NOT AVAILABLE YET.

Today the agent writes each guest's serial console to a log file on its host and serves
nothing, so there is no path from a user to a console. This command says so and exits
3; it does not fake one (no ssh to nodes, no reading host files).

The design (docs/cli.md, "console"), KubeVirt's proven shape:

  kubevisor console VM
    -> kube-apiserver            authenticates the user (any method: certs, OIDC, tokens)
    -> aggregated API            APIService v1alpha1.subresources.kubevisor.io, served by
       (kubevisor-api)           the controller's Deployment; it authorizes with a
                                 SubjectAccessReview: verb get on virtualmachines/console
                                 in group subresources.kubevisor.io, in the VM's namespace
    -> agent of status.host      over mTLS: the agent accepts only kubevisor-api's client
                                 certificate, and only for VMs bound to its own host
    -> libvirt virDomainOpenConsole on the serial device (a bidirectional stream)

The CLI opens a websocket to
/apis/subresources.kubevisor.io/v1alpha1/namespaces/NS/virtualmachines/VM/console with its
own kubeconfig credentials, like `kubectl exec`. Console access is then its own RBAC
permission (virtualmachines/console), grantable per namespace without granting edit of
VMs, and the agent is never reachable from users directly. `?log=true&tail=N` would
return the serial log the agent already keeps.

Exit codes: 3 not available (always, for now).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kubevisor.cli import kubeapi

NOT_AVAILABLE = (
    "console is not available yet: the agent serves no console endpoint "
    "(design: docs/cli.md#console, or `kubevisor console --help`)"
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "console",
        help="attach to a VM's serial console (not available yet: exits 3)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[kubeapi.options()],
    )
    parser.add_argument("vm", metavar="VM", help="VirtualMachine name")
    parser.add_argument(
        "--log", action="store_true", help="print the serial console log instead of attaching"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(f"error: {NOT_AVAILABLE}", file=sys.stderr)
    return kubeapi.UNAVAILABLE
