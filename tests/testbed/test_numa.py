"""Synthetic NUMA cells: libvirt on a one-node machine reports (and places on) two cells."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from harness import require
from kubevisor.testbed import hosts, numa
from kubevisor.testbed.guest import Guest


def fake_cpus(root: Path, count: int) -> Path:
    for cpu in range(count):
        (root / f"cpu{cpu}").mkdir(parents=True)
    (root / "cpufreq").mkdir()  # not a CPU, as in the real directory
    return root


@pytest.mark.parametrize(
    ("cpus", "cells", "expected"),
    [
        pytest.param(2, 2, [("0", "00000001"), ("1", "00000002")], id="one-cpu-per-cell"),
        pytest.param(4, 2, [("0-1", "00000003"), ("2-3", "0000000c")], id="contiguous-blocks"),
        pytest.param(
            40, 1, [("0-39", "000000ff,ffffffff")], id="masks-wider-than-32-bits-in-words"
        ),
    ],
)
def test_cpus_are_split_into_contiguous_blocks(
    tmp_path: Path, cpus: int, cells: int, expected: list[tuple[str, str]]
) -> None:
    sysfs_cpu = fake_cpus(tmp_path / "cpu", cpus)
    numa.write_tree(tmp_path / "node", cells, sysfs_cpu=sysfs_cpu)
    found = [
        ((node / "cpulist").read_text().strip(), (node / "cpumap").read_text().strip())
        for node in sorted((tmp_path / "node").glob("node*"))
    ]
    assert found == expected
    assert (tmp_path / "node" / "online").read_text().strip() == ("0" if cells == 1 else "0-1")
    links = sorted((tmp_path / "node" / "node0").glob("cpu[0-9]*"))
    assert links and all(link.resolve().parent == sysfs_cpu for link in links)


def test_memory_is_split_evenly_and_distances_are_local_first(tmp_path: Path) -> None:
    numa.write_tree(tmp_path / "node", 2, sysfs_cpu=fake_cpus(tmp_path / "cpu", 2))
    total, _ = numa.memory_kib()
    for node in (0, 1):
        meminfo = (tmp_path / "node" / f"node{node}" / "meminfo").read_text()
        assert f"Node {node} MemTotal:       {total // 2} kB" in meminfo
    assert (tmp_path / "node" / "node1" / "distance").read_text().split() == ["20", "10"]


def test_more_cells_than_cpus_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one CPU each"):
        numa.write_tree(tmp_path / "node", 3, sysfs_cpu=fake_cpus(tmp_path / "cpu", 2))


@pytest.fixture(scope="module")
def two_cell_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[hosts.LocalHost]:
    missing = hosts.missing_prerequisites()
    require(not missing, what=f"local libvirtd hosts (missing {missing})", how=hosts.HOW_TO_INSTALL)
    require(len(numa.machine_cpus()) >= 2, what="two NUMA cells", how="a machine with 2 CPUs")
    state = tmp_path_factory.mktemp("numa-hosts")
    try:
        yield hosts.start_hosts(1, state_dir=state, numa_cells=2)[0]
    finally:
        hosts.stop_hosts(state)


@pytest.mark.libvirtd
def test_libvirt_reports_the_synthetic_cells(two_cell_host: hosts.LocalHost) -> None:
    conn = libvirt.open(two_cell_host.uri)
    try:
        caps = ET.fromstring(conn.getCapabilities())
    finally:
        conn.close()
    cells = caps.findall("host/topology/cells/cell")
    assert [[c.get("id") for c in cell.iter("cpu")] for cell in cells] == [["0"], ["1"]]
    total, _ = numa.memory_kib()
    assert [int(cell.findtext("memory") or 0) for cell in cells] == [total // 2] * 2


def two_cell_domain(guest: Guest, tmp_path: Path, *, mode: str) -> str:
    """Two guest cells of 128 MiB, vCPU i pinned to pCPU i, cell i bound to host cell i."""
    domain = ET.fromstring(
        guest.domain_xml(name=f"cells-{mode}", serial_log=tmp_path / "serial.log", memory_mib=256)
    )
    vcpu = domain.find("vcpu")
    assert vcpu is not None
    vcpu.text = "2"
    tune = ET.SubElement(domain, "cputune")
    numatune = ET.SubElement(domain, "numatune")
    ET.SubElement(numatune, "memory", mode=mode, nodeset="0-1")
    cpu_numa = ET.SubElement(ET.SubElement(domain, "cpu"), "numa")
    for cell in ("0", "1"):
        ET.SubElement(tune, "vcpupin", vcpu=cell, cpuset=cell)
        ET.SubElement(numatune, "memnode", cellid=cell, mode=mode, nodeset=cell)
        ET.SubElement(cpu_numa, "cell", id=cell, cpus=cell, memory="131072", unit="KiB")
    return ET.tostring(domain, encoding="unicode")


@pytest.mark.libvirtd
def test_restrictive_binding_starts_where_strict_cannot(
    two_cell_host: hosts.LocalHost, tiny_guest: Guest, tmp_path: Path
) -> None:
    """The kernel has node 0 only: QEMU's mbind() to host cell 1 fails a strict start, and
    restrictive (cgroup cpuset.mems only, and the testbed has no cgroups) is what runs."""
    conn = libvirt.open(two_cell_host.uri)
    try:
        with pytest.raises(libvirt.libvirtError, match="cannot bind memory to host NUMA"):
            conn.createXML(two_cell_domain(tiny_guest, tmp_path, mode="strict"))
        running = conn.createXML(two_cell_domain(tiny_guest, tmp_path, mode="restrictive"))
        try:
            # vcpuPinInfo: one tuple of per-pCPU booleans per vCPU.
            pins = [[i for i, on in enumerate(cpus) if on] for cpus in running.vcpuPinInfo()]
            assert pins == [[0], [1]]
        finally:
            running.destroy()
    finally:
        conn.close()
