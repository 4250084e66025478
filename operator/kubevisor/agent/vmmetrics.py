"""Per-VM usage metrics: the agent's Prometheus collector over the hypervisor's bulk
domain statistics.

`VmUsageCollector` is registered with the agent's metrics registry (`agent.main`) and
computes its series at scrape time from one `Hypervisor.domain_stats()` call for all
domains (libvirt's virConnectGetAllDomainStats), never one call per VM. That call blocks
the hypervisor connection, so a sample is kept for `max_age` seconds and shared by the
scrapes in between (a second Prometheus, several `kubevisor top`s), and a scrape waits at
most `timeout` seconds for a new one.

Every series is labelled `namespace`, `name` (the VirtualMachine) and `host` (this
agent's HypervisorHost), plus `vcpu`, `device` (a disk's target) or `interface` (the
host-side tap) where there are several. A domain is mapped to its VM by the kubevisor
metadata in its XML (`core.domain.identity`), read once per domain UUID; domains
kubevisor did not define have no series. The series, their names and help are the tables
below (`FAMILIES`); counters end in `_total`, and units are seconds and bytes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubevisor import metrics
from kubevisor.core.domain import identity
from kubevisor.core.migration import JobStats
from kubevisor.drivers import base

log = logging.getLogger("kubevisor.agent.vmmetrics")

LABELS = ("namespace", "name", "host")


@dataclasses.dataclass(frozen=True)
class Family:
    """One exported metric: its full name (a counter's ends in `_total`), help, and how to
    read its value from one record (None: not reported, no series)."""

    name: str
    help: str
    read: Callable[[Any], float | int | None]

    @property
    def counter(self) -> bool:
        return self.name.endswith("_total")


def _family(name: str, help: str, read: Callable[[Any], float | int | None]) -> Family:
    return Family(f"kubevisor_vm_{name}", help, read)


# One series per VM.
VM: tuple[Family, ...] = (
    _family(
        "cpu_seconds_total",
        "CPU time of the VM's QEMU process (vCPUs and emulation), user and system.",
        lambda s: s.cpu_seconds,
    ),
    _family("vcpus", "vCPUs the VM runs with now.", lambda s: len(s.vcpus) or None),
)
MEMORY: tuple[Family, ...] = (
    _family("memory_actual_bytes", "Memory the balloon leaves the guest now.", lambda m: m.actual),
    _family(
        "memory_balloon_maximum_bytes",
        "The balloon's ceiling (the VM's memory).",
        lambda m: m.maximum,
    ),
    _family(
        "memory_rss_bytes", "Resident set of the VM's QEMU process on the host.", lambda m: m.rss
    ),
    _family(
        "memory_unused_bytes",
        "Memory free inside the guest, as its balloon driver reports it.",
        lambda m: m.unused,
    ),
    _family(
        "memory_available_bytes",
        "Memory the guest sees as its total, as its balloon driver reports it.",
        lambda m: m.available,
    ),
    _family(
        "memory_usable_bytes",
        "Memory the guest can reclaim without swapping, as its balloon driver reports it.",
        lambda m: m.usable,
    ),
    _family("memory_swap_in_bytes_total", "Bytes the guest swapped in.", lambda m: m.swap_in),
    _family("memory_swap_out_bytes_total", "Bytes the guest swapped out.", lambda m: m.swap_out),
    _family(
        "memory_major_faults_total",
        "Page faults the guest served from disk.",
        lambda m: m.major_faults,
    ),
    _family(
        "memory_minor_faults_total",
        "Page faults the guest served without I/O.",
        lambda m: m.minor_faults,
    ),
)
# One series per vCPU (label vcpu).
VCPU: tuple[Family, ...] = (
    _family("vcpu_seconds_total", "Time the vCPU ran.", lambda v: v.time),
    _family("vcpu_wait_seconds_total", "Time the vCPU waited for I/O.", lambda v: v.wait),
    _family(
        "vcpu_delay_seconds_total",
        "Time the vCPU was runnable but waited for a host CPU (steal time, seen from the host).",
        lambda v: v.delay,
    ),
)
# One series per disk (label device).
DISK: tuple[Family, ...] = (
    _family("disk_read_bytes_total", "Bytes read from the disk.", lambda b: b.read_bytes),
    _family("disk_write_bytes_total", "Bytes written to the disk.", lambda b: b.write_bytes),
    _family("disk_read_requests_total", "Read requests.", lambda b: b.read_requests),
    _family("disk_write_requests_total", "Write requests.", lambda b: b.write_requests),
    _family("disk_flush_requests_total", "Flush requests.", lambda b: b.flush_requests),
    _family(
        "disk_read_seconds_total",
        "Time spent on reads (divided by read requests: mean read latency).",
        lambda b: b.read_seconds,
    ),
    _family(
        "disk_write_seconds_total",
        "Time spent on writes (divided by write requests: mean write latency).",
        lambda b: b.write_seconds,
    ),
    _family("disk_flush_seconds_total", "Time spent on flushes.", lambda b: b.flush_seconds),
)
# One series per NIC (label interface).
NETWORK: tuple[Family, ...] = (
    _family("network_receive_bytes_total", "Bytes the VM received.", lambda n: n.rx_bytes),
    _family("network_transmit_bytes_total", "Bytes the VM sent.", lambda n: n.tx_bytes),
    _family("network_receive_packets_total", "Packets the VM received.", lambda n: n.rx_packets),
    _family("network_transmit_packets_total", "Packets the VM sent.", lambda n: n.tx_packets),
    _family(
        "network_receive_drops_total",
        "Packets to the VM dropped on the host.",
        lambda n: n.rx_drops,
    ),
    _family("network_transmit_drops_total", "Packets from the VM dropped.", lambda n: n.tx_drops),
    _family("network_receive_errors_total", "Receive errors.", lambda n: n.rx_errors),
    _family("network_transmit_errors_total", "Transmit errors.", lambda n: n.tx_errors),
)
# One series per VM migrating away from this host (the source agent's latest sample).
MIGRATION: tuple[Family, ...] = (
    _family(
        "migration_dirty_pages_per_second",
        "Pages the guest dirties per second during its outgoing live migration.",
        lambda j: j.dirty_rate_pps,
    ),
    _family(
        "migration_remaining_bytes",
        "Bytes its outgoing live migration has left to transfer.",
        lambda j: j.data_remaining,
    ),
)
# One series per host (label host alone): when the sample was taken, so a reader of two
# scrapes (`kubevisor top`) divides by the time between the samples, not the scrapes.
SAMPLED = Family(
    "kubevisor_vm_stats_timestamp_seconds",
    "Unix time the agent read the per-VM statistics these series show.",
    lambda sample: sample.wall_time,
)
FAMILIES = VM + MEMORY + VCPU + DISK + NETWORK + MIGRATION + (SAMPLED,)


def names() -> list[str]:
    """Every metric name this collector exports (for the dashboard's test)."""
    return [family.name for family in FAMILIES]


@dataclasses.dataclass(frozen=True)
class Sample:
    """One reading of every kubevisor domain's statistics, with the VM each belongs to."""

    taken_at: float  # on the collector's clock (monotonic)
    domains: Sequence[tuple[identity.VmRef, base.DomainStats]]
    wall_time: float = 0.0  # Unix time


def families(
    sample: Sample, *, host: str, migrating: Mapping[str, JobStats] | None = None
) -> list[Metric]:
    """The metric families of one sample (`migrating`: the latest job statistics of this
    host's outgoing migrations, by domain UUID)."""
    sampled = GaugeMetricFamily(SAMPLED.name, SAMPLED.help, labels=["host"])
    sampled.add_metric([host], sample.wall_time)
    built: dict[str, Metric] = {SAMPLED.name: sampled}

    def add(
        family: Family, extra: tuple[str, ...], records: Iterable[tuple[tuple[str, ...], Any]]
    ) -> None:
        for labels, record in records:
            value = family.read(record)
            if value is None:
                continue
            metric = built.get(family.name)
            if metric is None:
                kind = CounterMetricFamily if family.counter else GaugeMetricFamily
                metric = kind(family.name, family.help, labels=LABELS + extra)
                built[family.name] = metric
            metric.add_metric(labels, value)  # type: ignore[attr-defined]

    for ref, stats in sample.domains:
        vm = (ref.namespace, ref.name, host)
        for family in VM:
            add(family, (), [(vm, stats)])
        for family in MEMORY:
            add(family, (), [(vm, stats.memory)])
        for family in VCPU:
            add(family, ("vcpu",), [((*vm, str(v.id)), v) for v in stats.vcpus])
        for family in DISK:
            add(family, ("device",), [((*vm, b.device), b) for b in stats.blocks])
        for family in NETWORK:
            add(family, ("interface",), [((*vm, n.device), n) for n in stats.interfaces])
        job = (migrating or {}).get(stats.uuid)
        if job is not None:
            for family in MIGRATION:
                add(family, (), [(vm, job)])
    return list(built.values())


class VmUsageCollector(Collector):
    """The agent's per-VM metrics, read from `hypervisor` on the agent's event `loop` when
    a scrape (on the metrics server's thread) finds the last sample older than `max_age`.

    `migrating` returns the latest job statistics of the host's outgoing migrations (the
    agent's Migrator keeps them), by domain UUID.
    """

    def __init__(
        self,
        hypervisor: base.Hypervisor,
        *,
        host: str,
        loop: asyncio.AbstractEventLoop,
        migrating: Callable[[], Mapping[str, JobStats]] = dict,
        max_age: float = 2.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hv = hypervisor
        self._host = host
        self._loop = loop
        self._migrating = migrating
        self._max_age = max_age
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._sample: Sample | None = None
        self._refs: dict[str, identity.VmRef | None] = {}  # domain UUID -> its VM

    def describe(self) -> Iterable[Metric]:
        return []  # no sample at registration: the families are known only per scrape

    def collect(self) -> Iterator[Metric]:
        sample = self._current()
        if sample is not None:
            yield from families(sample, host=self._host, migrating=self._migrating())

    def _current(self) -> Sample | None:
        """The last sample while it is fresh, else a new one (None when the hypervisor
        cannot say in time: the scrape then has no per-VM series, and the log says why)."""
        with self._lock:  # concurrent scrapes share one hypervisor call
            now = self._clock()
            if self._sample is not None and now - self._sample.taken_at < self._max_age:
                return self._sample
            future = asyncio.run_coroutine_threadsafe(self.read(), self._loop)
            try:
                self._sample = future.result(self._timeout)
            except TimeoutError:
                future.cancel()
                log.warning("per-VM metrics: no domain statistics within %ss", self._timeout)
                return None
            except base.HypervisorError as error:
                log.warning("per-VM metrics: %s", error)
                return None
            return self._sample

    async def read(self) -> Sample:
        """One sample: the bulk statistics call, and the metadata of domains not seen before."""
        with metrics.timed(metrics.LIBVIRT_CALL_DURATION, "domain_stats"):
            found = await self._hv.domain_stats()
        present = {stats.uuid for stats in found}
        for uuid in self._refs.keys() - present:
            del self._refs[uuid]
        domains = []
        for stats in found:
            if stats.uuid not in self._refs:
                self._refs[stats.uuid] = await self._ref(stats.uuid)
            ref = self._refs[stats.uuid]
            if ref is not None:
                domains.append((ref, stats))
        return Sample(taken_at=self._clock(), domains=domains, wall_time=time.time())

    async def _ref(self, uuid: str) -> identity.VmRef | None:
        try:
            return identity.read_metadata(await self._hv.domain_xml(uuid))
        except base.DomainNotFound:
            return None
