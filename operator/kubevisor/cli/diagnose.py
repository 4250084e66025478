"""`kubevisor diagnose VM [--output DIR|FILE.tar.gz]`: what a person needs when a VM
misbehaves, gathered into a directory or a tarball to read or attach to a ticket.

From the API server: the VM (spec and status), its phase and conditions, its Events, the
placement explanation (with the engine's what-if for a VM on no host), its host's
HypervisorHost and the VM's MigrationJobs. What only the host has (the live domain XML,
`virsh domstats`, the QEMU and serial logs, the agent's log lines about the VM) is not
served by the agent yet: summary.txt names the commands that show it on the host.

Secrets are redacted before anything is written: cloud-init user data, meta data and
network config, the last-applied annotation (which copies the spec), and every field
whose name says it holds a password, token, key or credentials. Secret references keep
their names; the command never reads a Secret.

Exit codes: 0 written; 1 the VM does not exist, cannot be read, or an API error.
"""

from __future__ import annotations

import argparse
import io
import re
import tarfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError

from kubevisor import flags
from kubevisor.api import wire
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.cli import kubeapi, placement
from kubevisor.cli.kubeapi import HOSTS, MIGRATIONS, VMS, CliError, Object
from kubevisor.core.domain import identity
from kubevisor.kube.cluster import Cluster

REDACTED: Final = "<redacted>"
# Fields whose values are secrets wherever they appear (matched on the camelCase name).
SECRET_FIELD: Final = re.compile(
    r"(?i)^(userData|metaData|networkConfig|password|passwd|token|secret|credentials?"
    r"|privateKey|.*Password|.*Token|.*PrivateKey)$"
)
LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"


def redact(node: Any) -> Any:
    """A copy of `node` with every secret value replaced by REDACTED (a field named as in
    SECRET_FIELD holding text or data, and the last-applied annotation), and no
    managedFields; pure."""
    if isinstance(node, list):
        return [redact(item) for item in node]
    if not isinstance(node, dict):
        return node
    copy: dict[str, Any] = {}
    for key, value in node.items():
        if key == "managedFields":
            continue
        if key == LAST_APPLIED or (SECRET_FIELD.match(key) and not isinstance(value, dict)):
            copy[key] = REDACTED
        else:
            copy[key] = redact(value)
    return copy


def condition_lines(status: Object) -> list[str]:
    """The phase and one line per condition: type=status reason (since): message."""
    lines = [f"phase: {status.get('phase') or 'not reported'}"]
    for condition in status.get("conditions") or []:
        since = condition.get("lastTransitionTime")
        lines.append(
            f"{condition.get('type')}={condition.get('status')} "
            f"{condition.get('reason') or '-'}{f' (since {since})' if since else ''}: "
            f"{condition.get('message') or ''}".rstrip(": ")
        )
    return lines


def event_lines(events: Iterable[Object]) -> list[str]:
    """One line per Event, oldest first: time type reason (xcount): message."""

    def when(event: Object) -> str:
        return str(
            event.get("lastTimestamp")
            or event.get("eventTime")
            or (event.get("metadata") or {}).get("creationTimestamp")
            or ""
        )

    lines = []
    for event in sorted(events, key=when):
        count = event.get("count") or 1
        lines.append(
            f"{when(event)} {event.get('type')} {event.get('reason')}"
            f"{f' (x{count})' if count > 1 else ''}: {event.get('message') or ''}"
        )
    return lines or ["no events (Events expire after an hour by default)"]


def host_commands(namespace: str, name: str, host: str | None) -> list[str]:
    """What to run on the VM's host for what only the host has."""
    domain = identity.domain_name(namespace, name)
    where = f"on host {host}" if host else "on the VM's host, once it has one"
    return [
        f"Not gathered (the agent does not serve them yet); {where}:",
        f"  virsh -c qemu:///system dumpxml {domain}  # the live domain XML",
        f"  virsh -c qemu:///system domstats {domain}  # CPU, balloon, block, net",
        f"  tail -n 200 /var/log/libvirt/qemu/{domain}.log  # QEMU's log",
        f"  kubevisor console {name} -n {namespace}  # the serial console",
        f"  kubectl -n kubevisor-system logs POD -c agent | grep '{namespace}/{name}'"
        "  # the agent's lines (POD: the agent on that node)",
    ]


def summary_lines(vm: Object, *, written: Iterable[str]) -> list[str]:
    meta = vm.get("metadata") or {}
    status = vm.get("status") or {}
    namespace, name = meta.get("namespace", "default"), meta.get("name", "")
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    lines = [
        f"kubevisor diagnose {namespace}/{name} at {datetime.now(UTC).isoformat()}",
        f"phase {status.get('phase') or 'not reported'}, host {status.get('host') or 'none'}",
    ]
    if ready is not None:
        lines.append(
            f"Ready={ready.get('status')} {ready.get('reason') or '-'}: "
            f"{ready.get('message') or ''}".rstrip(": ")
        )
    lines += ["", "files:", *(f"  {file}" for file in written), ""]
    lines += host_commands(namespace, name, status.get("host"))
    lines += ["", f"Secrets are redacted ({REDACTED}); Secret references keep their names."]
    return lines


def placement_text(cluster: Cluster, vm: Object, args: argparse.Namespace) -> list[str]:
    """explain-placement's lines, and for a VM on no host the engine's what-if."""
    try:
        model = VirtualMachine.model_validate(vm)
    except ValidationError as invalid:
        return [f"the VM cannot be read: {invalid.errors()[0]['msg']}"]
    bound, lines = placement.explain_status(model)
    if bound or model.spec.run_strategy == "Halted":
        return lines
    return lines + placement.ask_engine(cluster, model, args)[1]


def gather(cluster: Cluster, name: str, args: argparse.Namespace) -> dict[str, str]:
    """The bundle's files (name -> text), every object redacted."""
    vm = cluster.get(VMS, name)
    status = vm.get("status") or {}
    files = {
        "vm.yaml": yaml.safe_dump(redact(vm), sort_keys=False),
        "conditions.txt": "\n".join(condition_lines(status)) + "\n",
        "events.txt": "\n".join(event_lines(cluster.events(VMS.kind, name))) + "\n",
        "placement.txt": "\n".join(placement_text(cluster, vm, args)) + "\n",
    }
    if host := status.get("host"):
        files["host.yaml"] = yaml.safe_dump(redact(cluster.get(HOSTS, host)), sort_keys=False)
    jobs = [job for job in cluster.items(MIGRATIONS) if (job.get("spec") or {}).get("vm") == name]
    if jobs:
        files["migrationjobs.yaml"] = yaml.safe_dump_all(redact(jobs), sort_keys=False)
    files["summary.txt"] = "\n".join(summary_lines(vm, written=sorted(files))) + "\n"
    return files


def write(files: dict[str, str], output: Path) -> None:
    """Into directory `output`, or the gzipped tarball `output` when it ends in .tar.gz
    (its members under one directory named like the tarball)."""
    if output.name.endswith((".tar.gz", ".tgz")):
        top = output.name.removesuffix(".tar.gz").removesuffix(".tgz")
        output.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(output, "w:gz") as tar:
            for file, text in files.items():
                data = text.encode()
                info = tarfile.TarInfo(f"{top}/{file}")
                info.size = len(data)
                info.mode = 0o600
                tar.addfile(info, io.BytesIO(data))
        return
    output.mkdir(parents=True, exist_ok=True)
    for file, text in files.items():
        (output / file).write_text(text)


def register(subparsers: Any) -> None:
    parser = kubeapi.command(
        subparsers,
        "diagnose",
        __doc__,
        help="gather a VM's conditions, events, placement and host into a directory or tarball",
    )
    parser.add_argument("vm", metavar="VM", help="VirtualMachine name")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="directory, or FILE.tar.gz (default: ./kubevisor-diagnose-NAMESPACE-VM)",
    )
    flags.add_placement(parser, subset=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    def act(cluster: Cluster) -> int:
        files = gather(cluster, args.vm, args)
        output = args.output or Path(f"kubevisor-diagnose-{cluster.namespace}-{args.vm}")
        try:
            write(files, output)
        except OSError as error:
            raise CliError(f"cannot write {output}: {error}") from error
        print(f"{wire.VIRTUAL_MACHINES.qualified}/{args.vm}: {len(files)} files in {output}")
        return kubeapi.OK

    return kubeapi.with_cluster(args, act)
