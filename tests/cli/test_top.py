"""`kubevisor top`'s arithmetic and its reading of agents, on the text the agent's per-VM
collector really exposes (over a FakeHypervisor); `top` against a running stack is in
tests/e2e/test_top_e2e.py."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kubevisor.agent import vmmetrics
from kubevisor.cli import top
from kubevisor.core.domain import identity
from kubevisor.drivers import base
from kubevisor.drivers.fake import FakeHypervisor

GIB = 2**30


def reading(sampled_at: float, **vms: dict[str, float]) -> top.Reading:
    return top.Reading(host="h1", sampled_at=sampled_at, vms={("ns", n): v for n, v in vms.items()})


def counters(
    cpu: float, rx: float = 0.0, vcpus: float = 2.0, memory: float = GIB
) -> dict[str, float]:
    return {
        "cpu_seconds": cpu,
        "net_rx": rx,
        "disk_read": 0.0,
        "disk_write": 0.0,
        "net_tx": 0.0,
        "vcpus": vcpus,
        "memory": memory,
    }


def test_the_agents_text_parses_into_each_vms_sums() -> None:
    async def exposed() -> str:
        hv = FakeHypervisor()
        await hv.connect()
        xml = (
            "<domain type='qemu'><name>ns_web</name><uuid>u1</uuid><metadata>"
            f"<kv:vm xmlns:kv='{identity.NAMESPACE}' namespace='ns' name='web' uid='u1'/>"
            "</metadata></domain>"
        )
        await hv.define(xml)
        await hv.start("u1")
        hv.domains["u1"].usage = base.DomainStats(
            uuid="",
            name="",
            state=base.DomainState.RUNNING,
            cpu_seconds=4.0,
            vcpus=(base.VcpuStats(id=0, time=1.0), base.VcpuStats(id=1, time=2.0)),
            memory=base.MemoryStats(rss=GIB),
            blocks=(
                base.BlockStats(device="vda", read_bytes=100, write_bytes=10),
                base.BlockStats(device="vdb", read_bytes=50),
            ),
            interfaces=(base.InterfaceStats(device="vnet0", rx_bytes=7, tx_bytes=3),),
        )
        registry = CollectorRegistry()
        registry.register(
            vmmetrics.VmUsageCollector(hv, host="h1", loop=asyncio.get_running_loop())
        )
        return (await asyncio.to_thread(generate_latest, registry)).decode()

    parsed = top.parse("h1", asyncio.run(exposed()))
    assert parsed.sampled_at == pytest.approx(time.time(), abs=60)
    assert parsed.vms == {
        ("ns", "web"): {
            "cpu_seconds": 4.0,
            "vcpus": 2.0,
            "memory": GIB,
            "disk_read": 150.0,
            "disk_write": 10.0,
            "net_rx": 7.0,
            "net_tx": 3.0,
        }
    }


@pytest.mark.parametrize(
    ("before", "after", "cores", "rx"),
    [
        pytest.param(counters(10.0, 0), counters(11.0, 4000), 0.5, 2000, id="growth-over-2s"),
        pytest.param(counters(500.0), counters(0.5), 0.25, 0, id="restarted-vm-counts-anew"),
    ],
)
def test_rates_divide_growth_by_the_time_between_samples(
    before: dict[str, float], after: dict[str, float], cores: float, rx: float
) -> None:
    [row] = top.usage(reading(100.0, web=before), reading(102.0, web=after))
    assert (row.cpu_cores, row.net_rx, row.memory, row.vcpus) == (cores, rx, GIB, 2.0)
    assert top.vm_cells(row, namespaces=False)[2:4] == (
        f"{round(cores * 1000)}m",
        f"{cores / 2 * 100:.0f}%",
    )


def test_a_vm_missing_from_the_first_reading_has_no_row_yet() -> None:
    rows = top.usage(
        reading(1.0, old=counters(1.0)), reading(3.0, old=counters(2.0), new=counters(9.0))
    )
    assert [r.name for r in rows] == ["old"]


def test_two_readings_of_one_sample_are_refused() -> None:
    with pytest.raises(ValueError, match="same sample"):
        top.usage(reading(5.0), reading(5.0))


def test_hosts_sum_their_vms_and_show_shares_of_capacity() -> None:
    rows = top.usage(
        reading(0.0, a=counters(0.0), b=counters(0.0)),
        reading(1.0, a=counters(1.0), b=counters(3.0)),
    )
    totals = top.per_host(rows, ["h1", "idle"])
    count, total = totals["h1"]
    cells = top.host_cells(count, total, (8, 8 * GIB))
    assert cells[:6] == ("h1", "2", "4000m", "50%", "2Gi", "25%")
    assert top.host_cells(*totals["idle"], (None, None))[:6] == ("idle", "0", "0m", "-", "0Mi", "-")


class Agents:
    """Agents' /metrics texts by URL; each fetch of a `fresh` URL serves a newer sample."""

    def __init__(self, *, stale: frozenset[str] = frozenset(), down: frozenset[str] = frozenset()):
        self.stale, self.down = stale, down
        self.fetches: dict[str, int] = {}
        self.slept: list[float] = []
        self.now = 0.0

    def fetch(self, url: str) -> str:
        if url in self.down:
            raise OSError("connection refused")
        count = self.fetches[url] = self.fetches.get(url, 0) + 1
        sampled = 1000.0 if url in self.stale or count < 3 else 1002.0
        return f'{top.SAMPLED}{{host="x"}} {sampled}\n'

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def test_the_second_reading_waits_for_a_new_sample_and_unreadable_agents_are_named() -> None:
    agents = Agents(stale=frozenset({"http://stale"}), down=frozenset({"http://down"}))
    urls = {"fresh": "http://fresh", "stale": "http://stale", "down": "http://down"}
    readings, failed = top.read_twice(
        urls, interval=2.0, fetch=agents.fetch, sleep=agents.sleep, clock=agents.clock, patience=5.0
    )
    assert list(readings) == ["fresh"]
    before, after = readings["fresh"]
    assert (before.sampled_at, after.sampled_at) == (1000.0, 1002.0)
    assert agents.fetches["http://fresh"] == 3  # the same sample once more, then a new one
    assert agents.slept[0] == 2.0
    assert agents.now == pytest.approx(7.5)  # the stale one was given 5 s
    assert "connection refused" in failed["down"]
    assert "no new sample" in failed["stale"]


def test_endpoints_prefer_overrides_and_skip_hosts_without_one() -> None:
    hosts = [
        {"metadata": {"name": "a"}, "status": {"metricsEndpoint": "http://a:9091/metrics"}},
        {"metadata": {"name": "b"}, "status": {"metricsEndpoint": "http://b:9091/metrics"}},
        {"metadata": {"name": "c"}, "status": {}},
    ]
    assert top.endpoints(hosts, {"b": "http://localhost:1/metrics"}) == {
        "a": "http://a:9091/metrics",
        "b": "http://localhost:1/metrics",
    }
