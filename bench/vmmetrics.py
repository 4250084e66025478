"""Per-VM metrics benchmark: what one scrape of the agent's /metrics costs with 100 domains.

100 running domains with kubevisor metadata on libvirt's `test:///default`, the agent's
`VmUsageCollector` over a `LibvirtHypervisor` registered with a registry served by
prometheus_client's HTTP server, as in the agent. Each scrape is a `curl` of /metrics (a
child process: its CPU is not the agent's), with the collector's cache off (max_age 0), so
every scrape makes the bulk statistics call. Figures, in the same run:

- baseline: one `getAllDomainStats` call for all domains, alone (libvirt-python, no
  kubevisor), and the same statistics asked one domain at a time (100 calls);
- the full scrape over HTTP: wall time (median, p95) and this process's CPU time per
  scrape (user + system: the metrics server, the agent's event loop, the driver's thread
  and libvirt's client), and that CPU as a share of one core at a 15 s scrape interval.

With `--libvirtd`, the same against a testbed libvirtd (QEMU driver) over its socket, with
100 defined domains (not running: 100 guests do not fit a CI machine), so the baseline
shows what a round trip per domain costs. libvirt 9.0's test driver reports only each
domain's state, so a last run serves the same 100 VMs from a `FakeHypervisor` whose
domains report what a QEMU domain does (2 vCPUs, 2 disks, 2 NICs, balloon): the cost of
the series themselves.

Run: .venv/bin/python bench/vmmetrics.py [--domains 100] [--scrapes 50] [--libvirtd]
Prints figures; it is not a timed test. Targets: a scrape under 100 ms and under 2% of a core.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import statistics
import subprocess
import tempfile
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import libvirt
from prometheus_client import CollectorRegistry, start_http_server

from kubevisor.agent import vmmetrics
from kubevisor.core.domain import identity
from kubevisor.drivers import base
from kubevisor.drivers.fake import FakeHypervisor
from kubevisor.drivers.libvirt import LibvirtHypervisor
from kubevisor.drivers.libvirt import stats as libvirt_stats
from kubevisor.testbed import hosts

URI = "test:///default"
INTERVAL = 15.0  # seconds between two scrapes of a Prometheus at its default


def domain_xml(index: int, domain_type: str) -> tuple[str, str]:
    uid = str(uuidlib.uuid4())
    name = f"vm{index:03d}"
    root = ET.Element("domain", type=domain_type)
    ET.SubElement(root, "name").text = identity.domain_name("bench", name)
    ET.SubElement(root, "uuid").text = uid
    ET.SubElement(root, "memory", unit="MiB").text = "64"
    ET.SubElement(ET.SubElement(root, "os"), "type", arch="x86_64").text = "hvm"
    metadata = ET.SubElement(root, "metadata")
    ET.SubElement(metadata, f"{{{identity.NAMESPACE}}}vm", namespace="bench", name=name, uid=uid)
    return uid, ET.tostring(root, encoding="unicode")


def qemu_like() -> base.DomainStats:
    """What a running QEMU domain with 2 vCPUs, 2 disks and 2 NICs reports."""
    return base.DomainStats(
        uuid="",
        name="",
        state=base.DomainState.RUNNING,
        cpu_seconds=1234.5,
        vcpus=tuple(base.VcpuStats(id=i, time=600.0, wait=1.0, delay=2.0) for i in range(2)),
        memory=base.MemoryStats(
            actual=2**31, maximum=2**31, rss=2**30, unused=2**29, available=2**31, usable=2**29
        ),
        blocks=tuple(base.BlockStats(device=f"vd{c}", read_bytes=10**9) for c in "ab"),
        interfaces=tuple(base.InterfaceStats(device=f"vnet{i}", rx_bytes=10**9) for i in range(2)),
    )


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def baselines(uri: str, uids: list[str], repeat: int) -> None:
    conn = libvirt.open(uri)
    try:
        domains = [conn.lookupByUUIDString(uid) for uid in uids]
        bulk = timed(lambda: conn.getAllDomainStats(libvirt_stats.FLAGS, 0), repeat)
        each = timed(
            lambda: [conn.domainListGetStats([d], libvirt_stats.FLAGS, 0) for d in domains],
            repeat,
        )
    finally:
        conn.close()
    print(f"{uri}: one getAllDomainStats for {len(uids)} domains   {ms(bulk)}")
    print(f"{uri}: {len(uids)} per-domain domainListGetStats calls   {ms(each)}")


def ms(times: list[float]) -> str:
    p95 = sorted(times)[int(len(times) * 0.95) - 1]
    return f"median {statistics.median(times) * 1e3:7.2f} ms   p95 {p95 * 1e3:7.2f} ms"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def scrapes(label: str, hypervisor: base.Hypervisor, count: int) -> None:
    registry = CollectorRegistry()
    registry.register(
        vmmetrics.VmUsageCollector(
            hypervisor, host="bench", loop=asyncio.get_running_loop(), max_age=0
        )
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    curl = ["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}", f"http://127.0.0.1:{port}/"]
    try:
        size = (
            await asyncio.to_thread(subprocess.run, curl, capture_output=True, check=True)
        ).stdout
        collected = await asyncio.to_thread(lambda: list(registry.collect()))
        series = sum(len(metric.samples) for metric in collected)
        walls, cpus = [], []
        for _ in range(count):
            cpu, start = cpu_seconds(), time.perf_counter()
            await asyncio.to_thread(subprocess.run, curl, capture_output=True, check=True)
            walls.append(time.perf_counter() - start)
            cpus.append(cpu_seconds() - cpu)
    finally:
        server.shutdown()
        thread.join()
    share = statistics.median(cpus) / INTERVAL * 100
    print(
        f"{label}: full scrape over HTTP ({series} series, {int(size) // 1024} KiB)   {ms(walls)}"
    )
    print(
        f"{label}: agent CPU per scrape   median {statistics.median(cpus) * 1e3:7.2f} ms"
        f"   = {share:.3f}% of one core at a {INTERVAL:.0f} s interval"
    )


async def libvirt_run(uri: str, domain_type: str, domains: int, count: int) -> None:
    """Define `domains` domains at `uri` (started where the driver is libvirt's test
    driver), then the baselines and the scrapes; undefine them."""
    async with LibvirtHypervisor(uri) as hypervisor:
        uids = []
        for index in range(domains):
            uid, xml = domain_xml(index, domain_type)
            await hypervisor.define(xml)
            if domain_type == "test":
                await hypervisor.start(uid)
            uids.append(uid)
        try:
            await asyncio.to_thread(baselines, uri, uids, count)
            await scrapes(uri, hypervisor, count)
        finally:
            for uid in uids:
                await hypervisor.undefine(uid)


async def main(domains: int, count: int, *, libvirtd: bool) -> None:
    await libvirt_run(URI, "test", domains, count)
    if libvirtd:
        with tempfile.TemporaryDirectory() as state:
            [host] = await asyncio.to_thread(hosts.start_hosts, 1, state_dir=Path(state))
            try:
                await libvirt_run(host.uri, "qemu", domains, count)
            finally:
                await asyncio.to_thread(hosts.stop_hosts, Path(state))
    fake = FakeHypervisor()
    await fake.connect()
    for index in range(domains):
        uid, xml = domain_xml(index, "qemu")
        await fake.define(xml)
        await fake.start(uid)
        fake.domains[uid].usage = qemu_like()
    await scrapes("QEMU-like records", fake, count)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=100)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument(
        "--libvirtd",
        action="store_true",
        help="also against a testbed libvirtd (QEMU driver, defined domains) over its socket: "
        "what each round trip costs (take the heavy-test lock)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.domains, args.scrapes, libvirtd=args.libvirtd))
