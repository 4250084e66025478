"""Configurators of the guest's CPUs: <vcpu>, <cpu> (model, topology, flags, guest NUMA
cells) and <cputune> (limits, vCPU and emulator pins)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from kubevisor.api import cpuset, quantity
from kubevisor.api.virtualmachine import VirtualMachineSpec
from kubevisor.core.domain.document import Document
from kubevisor.core.domain.host import HostEnvironment


def vcpus(doc: Document) -> None:
    vcpu = ET.SubElement(doc.domain, "vcpu", placement="static")
    vcpu.text = str(doc.spec.cpu.vcpus)
    if doc.placement.shared_cpus:
        vcpu.set("cpuset", cpuset.render(doc.placement.shared_cpus))


def cpu(doc: Document) -> None:
    cpu_spec = doc.spec.cpu
    element = ET.SubElement(doc.domain, "cpu")
    model = cpu_spec.model
    if model in ("host-passthrough", "host-model"):
        element.set("mode", model)
    elif model is not None:
        element.set("mode", "custom")
        element.set("match", "exact")
        ET.SubElement(element, "model", fallback="forbid").text = model
    if cpu_spec.sockets or cpu_spec.cores or cpu_spec.threads:
        ET.SubElement(
            element,
            "topology",
            sockets=str(cpu_spec.sockets or 1),
            dies="1",
            cores=str(cpu_spec.cores or 1),
            threads=str(cpu_spec.threads or 1),
        )
    for feature in cpu_spec.features:
        ET.SubElement(element, "feature", policy="require", name=feature)
    for feature in cpu_spec.disabled_features:
        ET.SubElement(element, "feature", policy="disable", name=feature)
    if doc.spec.numa is not None:
        numa = ET.SubElement(element, "numa")
        for index, cell in enumerate(doc.spec.numa.cells):
            ET.SubElement(
                numa,
                "cell",
                id=str(index),
                cpus=cpuset.render(cell.cpus),
                memory=str(quantity.to_kib(cell.memory)),
                unit="KiB",
            )
    if len(element) == 0 and not element.attrib:
        doc.domain.remove(element)


def cputune(doc: Document) -> None:
    pins = sorted((pin.vcpu, pin.pcpu) for cell in doc.placement.cells for pin in cell.vcpu_pins)
    emulator = doc.placement.emulator_pins
    limits = doc.spec.cpu.tune if cpu_controller(doc.host) else None
    if not pins and not emulator and limits is None:
        return
    tune = ET.SubElement(doc.domain, "cputune")
    if limits is not None:
        # libvirt refuses to start a domain with these when cgroup cpu is unavailable
        # ("cgroup cpu is required for scheduler tuning"), hence cpu_controller.
        if limits.shares is not None:
            ET.SubElement(tune, "shares").text = str(limits.shares)
        if limits.period_microseconds is not None:
            ET.SubElement(tune, "period").text = str(limits.period_microseconds)
        if limits.quota_microseconds is not None:
            ET.SubElement(tune, "quota").text = str(limits.quota_microseconds)
    for vcpu, pcpu in pins:
        ET.SubElement(tune, "vcpupin", vcpu=str(vcpu), cpuset=str(pcpu))
    if emulator:
        ET.SubElement(tune, "emulatorpin", cpuset=cpuset.render(emulator))
    elif pins:
        # Without an isolated emulator thread, QEMU's own threads share the pinned CPUs.
        ET.SubElement(tune, "emulatorpin", cpuset=cpuset.render(pcpu for _, pcpu in pins))


def cpu_controller(host: HostEnvironment) -> bool:
    """Whether libvirt has the cgroup cpu controller here (unknown: assume it has)."""
    return host.cgroup_controllers is None or "cpu" in host.cgroup_controllers


def unenforced(spec: VirtualMachineSpec, host: HostEnvironment) -> list[str]:
    """The CPU limits of `spec` that `cputune` leaves out on this host."""
    if spec.cpu.tune is not None and not cpu_controller(host):
        return ["cpu.tune: the host has no cgroup cpu controller; shares and quota not enforced"]
    return []
