"""libvirt's bulk domain statistics records as `base.DomainStats` (pure parsing)."""

from __future__ import annotations

import pytest

from kubevisor.drivers import base
from kubevisor.drivers.libvirt import stats

# A running QEMU domain's record, shaped as virConnectGetAllDomainStats returns it.
QEMU_RECORD = {
    "state.state": 1,
    "state.reason": 1,
    "cpu.time": 2_500_000_000,
    "cpu.user": 1_000_000_000,
    "cpu.system": 500_000_000,
    "balloon.current": 98304,
    "balloon.maximum": 98304,
    "balloon.rss": 65536,
    "vcpu.current": 2,
    "vcpu.maximum": 2,
    "vcpu.0.state": 1,
    "vcpu.0.time": 1_500_000_000,
    "vcpu.0.wait": 0,
    "vcpu.0.delay": 250_000_000,
    "vcpu.1.state": 1,
    "vcpu.1.time": 500_000_000,
    "net.count": 1,
    "net.0.name": "vnet3",
    "net.0.rx.bytes": 1000,
    "net.0.rx.pkts": 10,
    "net.0.rx.errs": 0,
    "net.0.rx.drop": 2,
    "net.0.tx.bytes": 500,
    "net.0.tx.pkts": 5,
    "net.0.tx.errs": 1,
    "net.0.tx.drop": 0,
    "block.count": 1,
    "block.0.name": "vda",
    "block.0.path": "/var/lib/kubevisor/vms/x/disk.qcow2",
    "block.0.rd.reqs": 40,
    "block.0.rd.bytes": 163840,
    "block.0.rd.times": 3_000_000,
    "block.0.wr.reqs": 2,
    "block.0.wr.bytes": 1048576,
    "block.0.wr.times": 7_000_000,
    "block.0.fl.reqs": 1,
    "block.0.fl.times": 1_000_000,
}


def test_a_qemu_record_reads_in_seconds_and_bytes() -> None:
    found = stats.domain_stats_from("u1", "ns_vm", QEMU_RECORD)
    assert (found.state, found.cpu_seconds) == (base.DomainState.RUNNING, 2.5)
    assert (found.cpu_user_seconds, found.cpu_system_seconds) == (1.0, 0.5)
    assert found.vcpus == (
        base.VcpuStats(id=0, time=1.5, wait=0.0, delay=0.25),
        base.VcpuStats(id=1, time=0.5),
    )
    assert found.memory == base.MemoryStats(actual=96 * 2**20, maximum=96 * 2**20, rss=64 * 2**20)
    assert found.blocks == (
        base.BlockStats(
            device="vda",
            read_bytes=163840,
            write_bytes=1048576,
            read_requests=40,
            write_requests=2,
            flush_requests=1,
            read_seconds=pytest.approx(0.003),
            write_seconds=pytest.approx(0.007),
            flush_seconds=pytest.approx(0.001),
        ),
    )
    assert found.interfaces == (
        base.InterfaceStats(
            device="vnet3",
            rx_bytes=1000,
            rx_packets=10,
            rx_drops=2,
            tx_bytes=500,
            tx_packets=5,
            tx_errors=1,
        ),
    )


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        pytest.param(
            {"state.state": 1, "state.reason": 0},
            base.DomainStats(uuid="u1", name="ns_vm", state=base.DomainState.RUNNING),
            id="test-driver-reports-only-the-state",
        ),
        pytest.param(
            {"state.state": 5, "state.reason": 2, "balloon.maximum": 1024},
            base.DomainStats(
                uuid="u1",
                name="ns_vm",
                state=base.DomainState.SHUTOFF,
                memory=base.MemoryStats(maximum=2**20),
            ),
            id="shut-off-domain-has-no-counters",
        ),
        pytest.param(
            {"balloon.unused": 10, "balloon.available": 20, "balloon.usable": 15},
            base.DomainStats(
                uuid="u1",
                name="ns_vm",
                state=base.DomainState.NOSTATE,
                memory=base.MemoryStats(unused=10240, available=20480, usable=15360),
            ),
            id="guest-balloon-driver-reports-its-free-memory",
        ),
    ],
)
def test_what_is_not_reported_stays_unknown(
    record: stats.Record, expected: base.DomainStats
) -> None:
    assert stats.domain_stats_from("u1", "ns_vm", record) == expected
