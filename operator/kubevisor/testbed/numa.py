"""A synthetic /sys/devices/system/node that splits this machine into N NUMA cells.

Written by `kubevisor.testbed.hosts` for a host started with `numa_cells > 1`, and
bind-mounted over /sys/devices/system/node by `kubevisor.testbed.hostinit` before libvirtd
starts, so the host's libvirt capabilities report N cells on a one-node machine. That is
what lets multi-cell placement (Nova-style: each guest cell on its own host cell) run
end to end on a small development machine.

libvirt 9.0 builds its host topology from libnuma (numa_max_node and numa_node_to_cpus
read this directory's nodeN entries and nodeN/cpumap; numa_node_size64 reads
nodeN/meminfo; numa_distance reads nodeN/distance), from nodeN/hugepages, and from the
nodeN/cpuM links it follows to /sys/devices/system/cpu/cpuM for the CPUs' topology.

Only libvirt's view changes: the kernel still has node 0 alone, so binding memory to
another node (numatune mode strict) fails in QEMU with "cannot bind memory to host NUMA
nodes: Invalid argument". See DEVELOPERS.md.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kubevisor.api import cpuset

SYSFS_NODE = Path("/sys/devices/system/node")
SYSFS_CPU = Path("/sys/devices/system/cpu")
# Files libnuma and libvirt read for the set of nodes; each says "0-(N-1)".
NODE_SETS = ("online", "possible", "has_cpu", "has_memory", "has_normal_memory")
LOCAL_DISTANCE = 10
REMOTE_DISTANCE = 20


def write_tree(target: Path, cells: int, *, sysfs_cpu: Path = SYSFS_CPU) -> None:
    """Replace `target` with a node directory of `cells` cells built from this machine.

    CPUs are split into contiguous blocks in id order (2 CPUs, 2 cells: cpu0 -> node0,
    cpu1 -> node1); memory totals and free memory are split evenly, as a snapshot taken
    now (libvirt reads them again on each capabilities call, and will see this snapshot).
    """
    cpus = machine_cpus(sysfs_cpu)
    if not 1 <= cells <= len(cpus):
        raise ValueError(f"{cells} NUMA cells need at least one CPU each; there are {len(cpus)}")
    total_kib, free_kib = memory_kib()
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in NODE_SETS:
        (target / name).write_text(f"{cpuset.render(range(cells))}\n")
    for node in range(cells):
        mine = [cpu for index, cpu in enumerate(cpus) if index * cells // len(cpus) == node]
        _write_node(
            target / f"node{node}",
            node=node,
            cells=cells,
            cpus=mine,
            total_kib=total_kib // cells,
            free_kib=free_kib // cells,
            sysfs_cpu=sysfs_cpu,
        )


def machine_cpus(sysfs_cpu: Path = SYSFS_CPU) -> list[int]:
    """Ids of this machine's CPUs, ascending."""
    return sorted(
        int(entry.name[3:])
        for entry in sysfs_cpu.iterdir()
        if entry.name.startswith("cpu") and entry.name[3:].isdigit()
    )


def memory_kib(meminfo: Path = Path("/proc/meminfo")) -> tuple[int, int]:
    """(MemTotal, MemFree) of the whole machine in KiB."""
    fields = {}
    for line in meminfo.read_text().splitlines():
        key, _, rest = line.partition(":")
        fields[key] = int(rest.split()[0])
    return fields["MemTotal"], fields["MemFree"]


def _write_node(
    path: Path,
    *,
    node: int,
    cells: int,
    cpus: list[int],
    total_kib: int,
    free_kib: int,
    sysfs_cpu: Path,
) -> None:
    path.mkdir()
    (path / "cpulist").write_text(f"{cpuset.render(cpus)}\n")
    (path / "cpumap").write_text(f"{_cpumap(cpus)}\n")
    distances = (LOCAL_DISTANCE if other == node else REMOTE_DISTANCE for other in range(cells))
    (path / "distance").write_text(" ".join(map(str, distances)) + "\n")
    # The layout of the kernel's nodeN/meminfo; libnuma parses MemTotal and MemFree.
    (path / "meminfo").write_text(
        f"Node {node} MemTotal:       {total_kib} kB\n"
        f"Node {node} MemFree:        {free_kib} kB\n"
        f"Node {node} MemUsed:        {total_kib - free_kib} kB\n"
    )
    for cpu in cpus:
        os.symlink(sysfs_cpu / f"cpu{cpu}", path / f"cpu{cpu}")
    # No huge pages on synthetic cells: libvirt lists each size with a count of 0.
    for size in _hugepage_sizes():
        pages = path / "hugepages" / size
        pages.mkdir(parents=True)
        for name in ("nr_hugepages", "free_hugepages", "surplus_hugepages"):
            (pages / name).write_text("0\n")


def _hugepage_sizes() -> list[str]:
    sizes = Path("/sys/kernel/mm/hugepages")
    return sorted(p.name for p in sizes.iterdir()) if sizes.is_dir() else []


def _cpumap(ids: list[int]) -> str:
    """The kernel's mask format: hex, comma-separated 32-bit words, most significant first."""
    mask = sum(1 << cpu for cpu in ids)
    words = []
    while True:
        words.append(f"{mask & 0xFFFFFFFF:08x}")
        mask >>= 32
        if not mask:
            break
    return ",".join(reversed(words))
