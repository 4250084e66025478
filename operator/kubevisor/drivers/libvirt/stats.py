"""libvirt's bulk domain statistics (virConnectGetAllDomainStats) as `base.DomainStats`.

`FLAGS` asks for what the agent's per-VM metrics export, for every domain in one call;
`domain_stats_from` reads one domain's flat record ("cpu.time", "block.0.wr.bytes", ...;
see libvirt's virConnectGetAllDomainStats documentation). A key the hypervisor does not
report is left at None or 0: libvirt's test driver reports only the state, and
`balloon.unused`/`available`/`usable` exist only when the guest runs a balloon driver that
reports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import libvirt

from kubevisor.drivers import base
from kubevisor.drivers.libvirt import facts

FLAGS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)
NS = 1e-9  # libvirt reports times in nanoseconds
KIB = 1024  # and balloon sizes in KiB

Record = Mapping[str, Any]


def domain_stats_from(uuid: str, name: str, record: Record) -> base.DomainStats:
    """One domain's statistics from its getAllDomainStats `record`."""
    state, _ = facts.domain_state(record.get("state.state", 0), record.get("state.reason", 0))
    return base.DomainStats(
        uuid=uuid,
        name=name,
        state=state,
        cpu_seconds=_seconds(record.get("cpu.time")),
        cpu_user_seconds=_seconds(record.get("cpu.user")),
        cpu_system_seconds=_seconds(record.get("cpu.system")),
        vcpus=tuple(_vcpu(record, i) for i in range(int(record.get("vcpu.current", 0)))),
        memory=_memory(record),
        blocks=tuple(_block(record, i) for i in range(int(record.get("block.count", 0)))),
        interfaces=tuple(_interface(record, i) for i in range(int(record.get("net.count", 0)))),
    )


def _seconds(ns: Any) -> float | None:
    return None if ns is None else int(ns) * NS


def _kib(record: Record, key: str) -> int | None:
    value = record.get(key)
    return None if value is None else int(value) * KIB


def _vcpu(record: Record, index: int) -> base.VcpuStats:
    prefix = f"vcpu.{index}."
    return base.VcpuStats(
        id=index,
        time=_seconds(record.get(prefix + "time")) or 0.0,
        wait=_seconds(record.get(prefix + "wait")),
        delay=_seconds(record.get(prefix + "delay")),
    )


def _memory(record: Record) -> base.MemoryStats:
    return base.MemoryStats(
        actual=_kib(record, "balloon.current"),
        maximum=_kib(record, "balloon.maximum"),
        rss=_kib(record, "balloon.rss"),
        unused=_kib(record, "balloon.unused"),
        available=_kib(record, "balloon.available"),
        usable=_kib(record, "balloon.usable"),
        swap_in=_kib(record, "balloon.swap_in"),
        swap_out=_kib(record, "balloon.swap_out"),
        major_faults=record.get("balloon.major_fault"),
        minor_faults=record.get("balloon.minor_fault"),
    )


# The fields of a disk's and a NIC's statistics, by their keys under "block.N." and
# "net.N." (times in nanoseconds become seconds).
BLOCK_KEYS = {
    "read_bytes": "rd.bytes",
    "write_bytes": "wr.bytes",
    "read_requests": "rd.reqs",
    "write_requests": "wr.reqs",
    "flush_requests": "fl.reqs",
}
BLOCK_TIMES = {"read_seconds": "rd.times", "write_seconds": "wr.times", "flush_seconds": "fl.times"}
NET_KEYS = {
    f"{way}_{field}": f"{way}.{key}"
    for way in ("rx", "tx")
    for field, key in (
        ("bytes", "bytes"),
        ("packets", "pkts"),
        ("drops", "drop"),
        ("errors", "errs"),
    )
}


def _block(record: Record, index: int) -> base.BlockStats:
    prefix = f"block.{index}."
    fields: dict[str, Any] = {f: int(record.get(prefix + k, 0)) for f, k in BLOCK_KEYS.items()}
    fields |= {f: int(record.get(prefix + k, 0)) * NS for f, k in BLOCK_TIMES.items()}
    return base.BlockStats(device=str(record.get(prefix + "name", index)), **fields)


def _interface(record: Record, index: int) -> base.InterfaceStats:
    prefix = f"net.{index}."
    return base.InterfaceStats(
        device=str(record.get(prefix + "name", index)),
        **{field: int(record.get(prefix + key, 0)) for field, key in NET_KEYS.items()},
    )
