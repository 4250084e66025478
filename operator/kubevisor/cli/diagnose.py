"""`kubevisor diagnose VM [--output DIR|FILE.tar.gz]`: what a person needs when a VM
misbehaves, gathered into a directory or a tarball to read or attach to a ticket.

From the API server: the VM (spec and status), its phase and conditions, its Events, the
placement explanation (with the engine's what-if for a VM on no host), its host's
HypervisorHost and the VM's MigrationJobs. What only the host has goes under `host/`:
the live domain XML, `virsh domstats`, the last lines of the QEMU and serial logs and the
agent's log lines about the VM, which the agent of the VM's host serves through the
console API (GET .../virtualmachines/VM/diagnose in subresources.kubevisor.io: the
`virtualmachines/diagnose` permission, checked like the console's). A part the host
cannot supply (its driver has none, the VM never ran there) is named in summary.txt
with the reason; where the agent cannot be reached at all (no permission, no host, the
console API or the agent down) summary.txt says why and names the commands that show
the same on the host, and the rest is written all the same.

Secrets are redacted before anything is written: cloud-init user data, meta data and
network config, the last-applied annotation (which copies the spec), and every field
whose name says it holds a password, token, key or credentials. Secret references keep
their names; the command never reads a Secret. The agent redacts the host's files before
they leave it: secret attributes of the domain XML, and every piece of the VM's
cloud-init data wherever it appears in the XML and the logs (`core.redaction`).

Exit codes: 0 written; 1 the VM does not exist, cannot be read, or an API error.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml
from pydantic import ValidationError

from kubevisor import flags
from kubevisor.api import wire
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.cli import kubeapi, placement
from kubevisor.cli.kubeapi import HOSTS, MIGRATIONS, VMS, CliError, Object
from kubevisor.cli.subresources import Api
from kubevisor.console import protocol
from kubevisor.core.domain import identity
from kubevisor.core.redaction import LAST_APPLIED as LAST_APPLIED
from kubevisor.core.redaction import REDACTED as REDACTED
from kubevisor.core.redaction import redact as redact
from kubevisor.kube.cluster import Cluster

HOST_DIR: Final = "host"


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


@dataclass(frozen=True)
class HostPart:
    """What the agent of the VM's host served (`files`, `missing` with reasons), or why
    nothing (`unreachable`)."""

    files: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    unreachable: str | None = None


def host_part(cluster: Cluster, vm: Object, lines: int) -> HostPart:
    """GET the diagnose subresource of the VM: the agent's files, or why not."""
    if not (vm.get("status") or {}).get("host"):
        return HostPart(unreachable="the VM is on no host")
    api = Api(cluster, str(vm["metadata"]["name"]))

    async def go() -> HostPart:
        found, refused = await api.get(protocol.DIAGNOSE_SUBRESOURCE, {"lines": str(lines)})
        if found is None:
            return HostPart(unreachable=refused)
        body = json.loads(found)
        return HostPart(
            files={str(k): str(v) for k, v in (body.get("files") or {}).items()},
            missing={str(k): str(v) for k, v in (body.get("missing") or {}).items()},
        )

    try:
        return asyncio.run(go())
    except (aiohttp.ClientError, OSError, ValueError) as error:
        return HostPart(unreachable=f"cannot reach the API server: {error}")


def host_lines(namespace: str, name: str, host: str | None, part: HostPart) -> list[str]:
    """summary.txt's account of the host's part: what is missing and why."""
    if part.unreachable is None:
        return [f"From host {host} (under {HOST_DIR}/):"] + [
            f"  {file}: not gathered: {why}" for file, why in sorted(part.missing.items())
        ]
    why = f"The host's part was not gathered: {part.unreachable}"
    return [why, "", *host_commands(namespace, name, host)]


def host_commands(namespace: str, name: str, host: str | None) -> list[str]:
    """What to run on the VM's host for what only the host has."""
    domain = identity.domain_name(namespace, name)
    where = f"on host {host}" if host else "on the VM's host, once it has one"
    return [
        f"The same, by hand {where}:",
        f"  virsh -c qemu:///system dumpxml {domain}  # the live domain XML",
        f"  virsh -c qemu:///system domstats {domain}  # CPU, balloon, block, net",
        f"  tail -n 200 /var/log/libvirt/qemu/{domain}.log  # QEMU's log",
        f"  kubevisor console {name} -n {namespace}  # the serial console",
        f"  kubectl -n kubevisor-system logs POD -c agent | grep '{namespace}/{name}'"
        "  # the agent's lines (POD: the agent on that node)",
    ]


def summary_lines(vm: Object, *, written: Iterable[str], host: HostPart) -> list[str]:
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
    lines += host_lines(namespace, name, status.get("host"), host)
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
    host = host_part(cluster, vm, args.lines)
    files |= {f"{HOST_DIR}/{file}": text for file, text in host.files.items()}
    files["summary.txt"] = "\n".join(summary_lines(vm, written=sorted(files), host=host)) + "\n"
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
        (output / file).parent.mkdir(parents=True, exist_ok=True)
        (output / file).write_text(text)


def register(subparsers: Any) -> None:
    parser = kubeapi.vm_command(
        subparsers,
        "diagnose",
        __doc__,
        help="gather a VM's conditions, events, placement and host into a directory or tarball",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="directory, or FILE.tar.gz (default: ./kubevisor-diagnose-NAMESPACE-VM)",
    )
    parser.add_argument(
        "--lines",
        type=int,
        default=200,
        help="lines of each log from the host: QEMU's, the serial console's, the agent's "
        "(default: %(default)s; the agent serves at most 5000)",
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
