"""`kubevisor top vm|host`: CPU, memory, disk and network usage per VM or per host, like
`kubectl top`, read from the agents' Prometheus metrics.

Each agent publishes where it serves /metrics in its HypervisorHost's
status.metricsEndpoint (the agent's --metrics-advertise; on `make up`'s dev stack
http://127.0.0.1:PORT/metrics); `--endpoint HOST=URL` overrides it, e.g. for a
`kubectl port-forward` to an agent pod. In a cluster the agent advertises its pod IP, so
`top` must run where pod IPs are reachable (inside the cluster network), or use
`--endpoint`.

Rates need two readings: `top` scrapes every agent, waits `--interval` (default 2s),
and scrapes again until each agent has taken a new sample of its domains (agents keep one
for 2 s); every rate divides the growth of a counter by the time between the agent's two
samples (kubevisor_vm_stats_timestamp_seconds). CPU(cores) is host cores in use
(1000m = one core busy), CPU% the share of the VM's vCPUs (of the host's CPUs, for a
host), MEMORY the resident memory of the VM's QEMU process (summed over a host's VMs,
and its share of the host's memory). DISK and NET are bytes per second over all of a
VM's disks and NICs. A VM started between the two readings has no row yet.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kubevisor.api import quantity
from kubevisor.cli import kubeapi
from kubevisor.cli.hosts import table
from kubevisor.cli.kubeapi import HOSTS, CliError
from kubevisor.kube.cluster import Cluster

SAMPLED = "kubevisor_vm_stats_timestamp_seconds"
# What a row sums, by metric name: a VM's counters over its vCPUs, disks and NICs.
COUNTERS = {
    "kubevisor_vm_cpu_seconds_total": "cpu_seconds",
    "kubevisor_vm_disk_read_bytes_total": "disk_read",
    "kubevisor_vm_disk_write_bytes_total": "disk_write",
    "kubevisor_vm_network_receive_bytes_total": "net_rx",
    "kubevisor_vm_network_transmit_bytes_total": "net_tx",
}
GAUGES = {"kubevisor_vm_vcpus": "vcpus", "kubevisor_vm_memory_rss_bytes": "memory"}
SCRAPE_TIMEOUT = 10.0
VM_HEADER = ("NAMESPACE", "NAME", "HOST", "CPU(cores)", "CPU%", "MEMORY")
HOST_HEADER = ("NAME", "VMS", "CPU(cores)", "CPU%", "MEMORY", "MEMORY%")
IO_HEADER = ("DISK READ", "DISK WRITE", "NET RX", "NET TX")

VmKey = tuple[str, str]  # namespace, name


@dataclasses.dataclass(frozen=True)
class Reading:
    """One scrape of one agent: when its sample was taken, and each VM's values."""

    host: str
    sampled_at: float
    vms: Mapping[VmKey, Mapping[str, float]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Usage:
    """What one VM (or, summed, one host) uses between two readings; rates per second."""

    namespace: str
    name: str
    host: str
    cpu_cores: float
    vcpus: float
    memory: float
    disk_read: float
    disk_write: float
    net_rx: float
    net_tx: float

    def io(self) -> tuple[str, ...]:
        return tuple(_rate(v) for v in (self.disk_read, self.disk_write, self.net_rx, self.net_tx))

    def wire(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "host": self.host,
            "cpuCores": round(self.cpu_cores, 3),
            "vcpus": int(self.vcpus),
            "memoryBytes": int(self.memory),
            "diskReadBytesPerSecond": round(self.disk_read),
            "diskWriteBytesPerSecond": round(self.disk_write),
            "networkReceiveBytesPerSecond": round(self.net_rx),
            "networkTransmitBytesPerSecond": round(self.net_tx),
        }


def parse(host: str, text: str) -> Reading:
    """One agent's /metrics text as a Reading (only the series `top` shows)."""
    sampled_at = 0.0
    vms: dict[VmKey, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == SAMPLED:
                sampled_at = sample.value
                continue
            field = COUNTERS.get(sample.name) or GAUGES.get(sample.name)
            if field is None:
                continue
            values = vms.setdefault((sample.labels["namespace"], sample.labels["name"]), {})
            values[field] = values.get(field, 0.0) + sample.value
    return Reading(host=host, sampled_at=sampled_at, vms=vms)


def usage(before: Reading, after: Reading) -> list[Usage]:
    """Each VM in both readings: counters' growth per second between the two samples (a
    counter that went down was reset, by a restart: its new value is the growth), and
    the gauges as the later reading has them."""
    elapsed = after.sampled_at - before.sampled_at
    if elapsed <= 0:
        raise ValueError(f"host {after.host}: the two readings are of the same sample")
    rows = []
    for (namespace, name), now in sorted(after.vms.items()):
        then = before.vms.get((namespace, name))
        if then is None:
            continue
        rates = {}
        for field in COUNTERS.values():
            grown = now.get(field, 0.0) - then.get(field, 0.0)
            rates[field] = (grown if grown >= 0 else now.get(field, 0.0)) / elapsed
        rows.append(
            Usage(
                namespace=namespace,
                name=name,
                host=after.host,
                cpu_cores=rates.pop("cpu_seconds"),
                vcpus=now.get("vcpus", 0.0),
                memory=now.get("memory", 0.0),
                **rates,
            )
        )
    return rows


def per_host(rows: Iterable[Usage], hosts: Iterable[str]) -> dict[str, tuple[int, Usage]]:
    """Each host's VM count and the sum of its VMs' usage (hosts without VMs: zeros)."""
    totals = {
        host: (0, Usage(namespace="", name="", host=host, **dict.fromkeys(_SUMMED, 0.0)))
        for host in hosts
    }
    for row in rows:
        count, total = totals[row.host]
        summed = {f: getattr(total, f) + getattr(row, f) for f in _SUMMED}
        totals[row.host] = (count + 1, dataclasses.replace(total, **summed))
    return totals


_SUMMED = ("cpu_cores", "vcpus", "memory", "disk_read", "disk_write", "net_rx", "net_tx")


def _cores(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def _percent(part: float, whole: float | None) -> str:
    return f"{part / whole * 100:.0f}%" if whole else "-"


def _memory(count: float) -> str:
    return quantity.format_mib(round(count / 2**20))


def _rate(per_second: float) -> str:
    for unit, size in (("GiB/s", 2**30), ("MiB/s", 2**20), ("KiB/s", 2**10)):
        if per_second >= size:
            return f"{per_second / size:.1f}{unit}"
    return f"{per_second:.0f}B/s"


def vm_cells(row: Usage, *, namespaces: bool) -> tuple[str, ...]:
    cells = (
        row.namespace,
        row.name,
        row.host,
        _cores(row.cpu_cores),
        _percent(row.cpu_cores, row.vcpus),
        _memory(row.memory),
        *row.io(),
    )
    return cells if namespaces else cells[1:]


def host_cells(
    count: int, total: Usage, capacity: tuple[int | None, int | None]
) -> tuple[str, ...]:
    cpus, memory = capacity
    return (
        total.host,
        str(count),
        _cores(total.cpu_cores),
        _percent(total.cpu_cores, cpus),
        _memory(total.memory),
        _percent(total.memory, memory),
        *total.io(),
    )


def host_wire(count: int, total: Usage, capacity: tuple[int | None, int | None]) -> dict[str, Any]:
    wired = total.wire()
    del wired["namespace"], wired["host"]
    cpus, memory = capacity
    return {
        **wired,
        "name": total.host,
        "vms": count,
        "capacity": {"cpu": cpus, "memoryBytes": memory},
    }


# -- reading the agents ----------------------------------------------------------------------


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as response:
        return str(response.read().decode())


def endpoints(hosts: Iterable[kubeapi.Object], overrides: Mapping[str, str]) -> dict[str, str]:
    """Each host's /metrics URL: `overrides`, else its status.metricsEndpoint."""
    found = {}
    for host in hosts:
        name = str(host["metadata"]["name"])
        url = overrides.get(name) or (host.get("status") or {}).get("metricsEndpoint")
        if url:
            found[name] = str(url)
    return found


def read_twice(
    urls: Mapping[str, str],
    *,
    interval: float,
    fetch: Callable[[str], str] = fetch,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    patience: float = 10.0,
) -> tuple[dict[str, tuple[Reading, Reading]], dict[str, str]]:
    """Two readings of every agent, `interval` apart and of different samples; and why an
    agent could not be read (by host)."""
    failed: dict[str, str] = {}

    def read(host: str) -> Reading | None:
        try:
            return parse(host, fetch(urls[host]))
        except (OSError, ValueError) as error:
            failed[host] = f"cannot read {urls[host]}: {error}"
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(urls)))) as pool:
        first = {h: r for h, r in zip(urls, pool.map(read, urls), strict=True) if r is not None}
        sleep(interval)
        second: dict[str, Reading] = {}
        waiting = set(first)
        deadline = clock() + patience
        while waiting:
            asked = sorted(waiting)
            for host, reading in zip(asked, pool.map(read, asked), strict=True):
                if reading is not None and reading.sampled_at > first[host].sampled_at:
                    second[host] = reading
            waiting -= second.keys() | failed.keys()
            if waiting and clock() > deadline:
                for host in waiting:
                    failed[host] = f"{urls[host]} served no new sample within {patience:.0f}s"
                break
            if waiting:
                sleep(0.5)
    return {h: (first[h], second[h]) for h in second}, failed


# -- the command ----------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    parser = kubeapi.command(
        subparsers, "top", __doc__, help="CPU, memory, disk and network usage of VMs or hosts"
    )
    parser.add_argument("what", choices=("vm", "host"), help="per VM, or per host")
    parser.add_argument("name", nargs="?", help="only this VM (in the namespace) or host")
    parser.add_argument(
        "-A", "--all-namespaces", action="store_true", help="VMs of every namespace"
    )
    parser.add_argument(
        "--interval",
        type=kubeapi.parse_duration,
        default=2.0,
        help="time between the two readings rates are computed from (default 2s)",
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="HOST=URL",
        help="read HOST's agent at URL instead of its status.metricsEndpoint (repeatable)",
    )
    parser.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="default table"
    )
    parser.set_defaults(func=run)


def _overrides(pairs: Sequence[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        host, sep, url = pair.partition("=")
        if not sep or not host or not url:
            raise CliError(f"--endpoint {pair!r}: expected HOST=URL", code=kubeapi.USAGE)
        found[host] = url
    return found


def run(args: argparse.Namespace) -> int:
    overrides = _overrides(args.endpoint)

    def act(cluster: Cluster) -> int:
        hosts = cluster.items(HOSTS)
        if args.what == "host" and args.name:
            hosts = [h for h in hosts if h["metadata"]["name"] == args.name]
            if not hosts:
                raise CliError(f"HypervisorHost {args.name} not found")
        urls = endpoints(hosts, overrides)
        if not urls:
            raise CliError(
                "no agent publishes a metrics endpoint (status.metricsEndpoint; an agent "
                "with --metrics-port 0 serves none); pass --endpoint HOST=URL",
                code=kubeapi.UNAVAILABLE,
            )
        readings, failed = read_twice(urls, interval=args.interval)
        for host, reason in sorted(failed.items()):
            print(f"warning: host {host}: {reason}", file=sys.stderr)
        if not readings:
            raise CliError("no agent could be read", code=kubeapi.UNAVAILABLE)
        rows = [row for before, after in readings.values() for row in usage(before, after)]
        if args.what == "vm":
            return _print_vms(args, cluster.namespace, rows)
        capacity = {
            str(h["metadata"]["name"]): _capacity((h.get("status") or {}).get("capacity") or {})
            for h in hosts
        }
        totals = per_host(rows, sorted(readings))
        if args.output == "json":
            items = [host_wire(c, t, capacity[h]) for h, (c, t) in totals.items()]
            print(json.dumps({"items": items}, indent=2))
            return kubeapi.OK
        cells = [host_cells(c, t, capacity[h]) for h, (c, t) in totals.items()]
        print(table([HOST_HEADER + IO_HEADER, *cells]), end="")
        return kubeapi.OK

    return kubeapi.with_cluster(args, act)


def _print_vms(args: argparse.Namespace, namespace: str, rows: list[Usage]) -> int:
    if not args.all_namespaces:
        rows = [r for r in rows if r.namespace == namespace]
    if args.name:
        rows = [r for r in rows if r.name == args.name]
    if args.output == "json":
        print(json.dumps({"items": [r.wire() for r in rows]}, indent=2))
        return kubeapi.OK
    if not rows:
        where = "any namespace" if args.all_namespaces else f"namespace {namespace}"
        print(f"No running VMs found in {where}.", file=sys.stderr)
        return kubeapi.OK
    header: tuple[str, ...] = VM_HEADER + IO_HEADER
    header = header if args.all_namespaces else header[1:]
    print(table([header, *(vm_cells(r, namespaces=args.all_namespaces) for r in rows)]), end="")
    return kubeapi.OK


def _capacity(capacity: Mapping[str, Any]) -> tuple[int | None, int | None]:
    cpus = capacity.get("cpu")
    memory = capacity.get("memory")
    try:
        memory_bytes = quantity.to_bytes(str(memory)) if memory is not None else None
    except ValueError:
        memory_bytes = None
    return (cpus if isinstance(cpus, int) else None), memory_bytes
