"""Configurators of the guest's memory: <memory> and its huge-page backing, <numatune>
(the host cells placement chose), and the balloon device."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Literal

from kubevisor.api import cpuset, quantity
from kubevisor.api.virtualmachine import PlacementStatus
from kubevisor.core.domain.document import Document
from kubevisor.core.domain.host import HostEnvironment


def memory(doc: Document) -> None:
    kib = str(quantity.to_kib(doc.spec.memory.size))
    ET.SubElement(doc.domain, "memory", unit="KiB").text = kib
    ET.SubElement(doc.domain, "currentMemory", unit="KiB").text = kib
    if doc.spec.memory.hugepages is None:
        return
    backing = ET.SubElement(doc.domain, "memoryBacking")
    pages = ET.SubElement(backing, "hugepages")
    page_kib = str(quantity.to_kib(doc.spec.memory.hugepages.page_size))
    guest_cells = [str(cell.guest_cell) for cell in doc.placement.cells]
    attrs = {"size": page_kib, "unit": "KiB"}
    if guest_cells and doc.spec.numa is not None:
        attrs["nodeset"] = ",".join(guest_cells)
    ET.SubElement(pages, "page", attrs)


def numatune_mode(host: HostEnvironment) -> Literal["strict", "restrictive"]:
    """How the guest's memory is bound to the host cells placement chose.

    strict: libvirt confines the QEMU process with cgroup cpuset.mems and has QEMU mbind()
    each guest cell's memory to its host cell. restrictive (libvirt >= 7.3): cpuset.mems
    only, no mbind. Without the cpuset controller (the testbed's hosts run with
    `cgroup_controllers = [ ]`), restrictive binds nothing at all, which `unenforced`
    reports. We take it there anyway because strict without cgroups rests on mbind alone,
    and mbind fails the start ("cannot bind memory to host NUMA nodes: Invalid argument")
    whenever libvirt's cells are not the kernel's, as on the testbed's synthetic
    multi-cell hosts (kubevisor.testbed.numa). The price: a real multi-node host without
    the cpuset controller would have been bound by mbind and now is not.
    """
    if host.cgroup_controllers is None or "cpuset" in host.cgroup_controllers:
        return "strict"
    return "restrictive"


def numatune(doc: Document) -> None:
    cells = sorted(doc.placement.cells, key=lambda c: c.guest_cell)
    if not cells:
        return
    mode = numatune_mode(doc.host)
    tune = ET.SubElement(doc.domain, "numatune")
    host_cells = sorted({c.host_cell for c in cells})
    ET.SubElement(tune, "memory", mode=mode, nodeset=cpuset.render(host_cells))
    if doc.spec.numa is not None:
        # libvirt wants memnodes in the same mode as <memory> when that is restrictive.
        for cell in cells:
            ET.SubElement(
                tune,
                "memnode",
                cellid=str(cell.guest_cell),
                mode=mode,
                nodeset=str(cell.host_cell),
            )


def unenforced(placement: PlacementStatus, host: HostEnvironment) -> list[str]:
    """The memory binding `numatune` asks for and this host cannot enforce.

    Read from the placement, not the spec: placement alone decides which VMs get host
    cells (the NUMA-aware ones, `placement.model.Request.numa_aware`), and `numatune`
    renders exactly those cells.
    """
    if placement.cells and numatune_mode(host) == "restrictive":
        return [
            "numa: the host has no cgroup cpuset controller; guest memory is not bound "
            "to the placed host NUMA cells (numatune mode restrictive)"
        ]
    return []


def balloon(doc: Document) -> None:
    """The virtio balloon when the spec asks for one; none at all otherwise."""
    spec = doc.spec.memory.balloon
    if spec is None:
        ET.SubElement(doc.devices(), "memballoon", model="none")
        return
    element = ET.SubElement(doc.devices(), "memballoon", model="virtio")
    if spec.stats_period_seconds:
        ET.SubElement(element, "stats", period=str(spec.stats_period_seconds))
