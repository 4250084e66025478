"""The agent's per-VM metrics collector against a FakeHypervisor: scraped through a real
prometheus_client registry on another thread, as the agent's metrics server does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import pytest
from prometheus_client import CollectorRegistry

from agent.domains import running
from agent.fakeapi import NAMESPACE
from agent.scrapes import Labels, Samples, labels, scrape
from kubevisor.agent import vmmetrics
from kubevisor.core.migration import JobStats
from kubevisor.drivers import base
from kubevisor.drivers.fake import FakeHypervisor

USAGE = base.DomainStats(
    uuid="",
    name="",
    state=base.DomainState.RUNNING,
    cpu_seconds=12.5,
    vcpus=(base.VcpuStats(id=0, time=7.0, wait=0.5, delay=0.25), base.VcpuStats(id=1, time=3.0)),
    memory=base.MemoryStats(actual=512 * 2**20, maximum=512 * 2**20, rss=300 * 2**20),
    blocks=(base.BlockStats(device="vda", read_bytes=4096, write_bytes=8192, write_requests=2),),
    interfaces=(base.InterfaceStats(device="vnet0", rx_bytes=100, tx_packets=3, rx_drops=1),),
)


def vm(name: str, **extra: str) -> Labels:
    return labels(namespace=NAMESPACE, name=name, host="h1", **extra)


async def connected() -> FakeHypervisor:
    hv = FakeHypervisor()
    await hv.connect()
    return hv


def per_vm(samples: Samples) -> list[str]:
    """The names of the samples that belong to a VM."""
    return [name for name, labels in samples if "name" in dict(labels)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def collector(
    hv: FakeHypervisor,
    clock: Clock,
    *,
    migrating: Mapping[str, JobStats] | None = None,
    timeout: float = 5.0,
) -> tuple[CollectorRegistry, vmmetrics.VmUsageCollector]:
    registry = CollectorRegistry()
    usage = vmmetrics.VmUsageCollector(
        hv,
        host="h1",
        loop=asyncio.get_running_loop(),
        migrating=lambda: migrating or {},
        clock=clock,
        timeout=timeout,
    )
    registry.register(usage)
    return registry, usage


def test_series_are_labelled_by_vm_and_host_with_prometheus_names() -> None:
    async def main() -> Samples:
        hv = await connected()
        uid = await running(hv, "web")
        hv.domains[uid].usage = USAGE
        registry, _ = collector(hv, Clock())
        return await asyncio.to_thread(scrape, registry)

    samples = asyncio.run(main())
    assert samples[("kubevisor_vm_cpu_seconds_total", vm("web"))] == 12.5
    assert samples[("kubevisor_vm_vcpus", vm("web"))] == 2
    assert samples[("kubevisor_vm_vcpu_seconds_total", vm("web", vcpu="1"))] == 3.0
    assert samples[("kubevisor_vm_vcpu_delay_seconds_total", vm("web", vcpu="0"))] == 0.25
    # vCPU 1 reports no wait: no series, rather than a made-up zero.
    assert ("kubevisor_vm_vcpu_wait_seconds_total", vm("web", vcpu="1")) not in samples
    assert samples[("kubevisor_vm_memory_rss_bytes", vm("web"))] == 300 * 2**20
    assert ("kubevisor_vm_memory_unused_bytes", vm("web")) not in samples
    assert samples[("kubevisor_vm_disk_write_bytes_total", vm("web", device="vda"))] == 8192
    assert samples[("kubevisor_vm_disk_write_requests_total", vm("web", device="vda"))] == 2
    assert (
        samples[("kubevisor_vm_network_receive_bytes_total", vm("web", interface="vnet0"))] == 100
    )
    assert samples[("kubevisor_vm_network_receive_drops_total", vm("web", interface="vnet0"))] == 1
    sampled = samples[("kubevisor_vm_stats_timestamp_seconds", labels(host="h1"))]
    assert sampled == pytest.approx(time.time(), abs=60)
    exported = {name for name, _ in samples}
    assert exported <= set(vmmetrics.names()) | {
        n.removesuffix("_total") + "_created" for n in exported
    }


def test_one_bulk_call_serves_every_vm_and_scrapes_within_max_age_share_it() -> None:
    async def main() -> tuple[list[str], Samples, Samples]:
        hv = await connected()
        for index in range(5):
            await running(hv, f"vm{index}")
        await running(hv, "stray", ours=False)
        clock = Clock()
        registry, _ = collector(hv, clock)
        hv.calls.clear()
        first = await asyncio.to_thread(scrape, registry)
        clock.now += 1.0
        await asyncio.to_thread(scrape, registry)  # within max_age: the same sample
        clock.now += 5.0
        await asyncio.to_thread(scrape, registry)
        calls = [operation for operation, _ in hv.calls]
        for domain in hv.domains.values():
            domain.usage = USAGE
        hv.calls.clear()
        clock.now += 5.0
        later = await asyncio.to_thread(scrape, registry)
        calls += [operation for operation, _ in hv.calls]
        return calls, first, later

    calls, first, later = asyncio.run(main())
    # Two samples: one bulk call each, the metadata read once per domain (the first time).
    assert calls.count("domain_stats") == 3
    assert calls.count("domain_xml") == 6
    # The fake reports nothing but states until told: no series for anything.
    assert not per_vm(first)
    rows = {
        dict(labels)["name"] for name, labels in later if name == "kubevisor_vm_cpu_seconds_total"
    }
    assert rows == {f"vm{index}" for index in range(5)}  # the stray has no VM: no series


def test_a_migrating_vm_has_its_dirty_rate() -> None:
    async def main() -> Samples:
        hv = await connected()
        uid = await running(hv, "moving")
        await running(hv, "staying")
        job = JobStats(
            data_total=100,
            data_processed=40,
            data_remaining=60,
            memory_iteration=2,
            bandwidth_bps=10,
            time_elapsed_ms=500,
            dirty_rate_pps=1234,
        )
        registry, _ = collector(hv, Clock(), migrating={uid: job})
        return await asyncio.to_thread(scrape, registry)

    samples = asyncio.run(main())
    assert samples[("kubevisor_vm_migration_dirty_pages_per_second", vm("moving"))] == 1234
    assert samples[("kubevisor_vm_migration_remaining_bytes", vm("moving"))] == 60
    assert ("kubevisor_vm_migration_dirty_pages_per_second", vm("staying")) not in samples


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(base.RetryableError("libvirtd is restarting"), id="hypervisor-error"),
        pytest.param(None, id="no-answer-in-time"),
    ],
)
def test_a_scrape_without_statistics_has_no_vm_series_and_the_next_one_retries(
    failure: base.HypervisorError | None,
) -> None:
    async def main() -> tuple[Samples, Samples]:
        hv = await connected()
        uid = await running(hv, "web")
        hv.domains[uid].usage = USAGE
        registry, _ = collector(hv, Clock(), timeout=0.2)
        if failure is not None:
            hv.fail_next("domain_stats", failure)
            failed = await asyncio.to_thread(scrape, registry)
        else:
            failed = scrape(registry)  # on the loop's own thread: the loop cannot answer
        return failed, await asyncio.to_thread(scrape, registry)

    failed, retried = asyncio.run(main())
    assert not per_vm(failed)
    assert not failed
    assert ("kubevisor_vm_cpu_seconds_total", vm("web")) in retried


def test_names_are_unique_and_follow_prometheus_rules() -> None:
    names = vmmetrics.names()
    assert len(names) == len(set(names))
    for name in names:
        assert name.startswith("kubevisor_vm_"), name
        assert "_total" not in name.removesuffix("_total"), name
        assert not any(unit in name for unit in ("_ns", "_kib", "_ms")), name
