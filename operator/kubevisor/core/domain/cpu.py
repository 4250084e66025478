"""Configurators of the guest's CPUs: <vcpu>, <cpu> (model, topology, flags, guest NUMA
cells) and <cputune> (limits, vCPU and emulator pins).

Where the threads run: a dedicated VM's vCPUs are pinned one to one as placement says
(`vcpupin`); a shared VM's float over a set of host CPUs (`<vcpu cpuset>`), the shared
CPUs of the host cells placement put it on or, with none, the host's shared set, so that
it never runs on the CPUs pinned to dedicated VMs. QEMU's emulator threads run on the
CPU isolated for them, or beside the vCPUs (`emulatorpin`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Collection, Sequence

from kubevisor.api import cpuset, quantity
from kubevisor.api.virtualmachine import CpuTune, VirtualMachineSpec
from kubevisor.core.domain.document import Document, DomainError
from kubevisor.core.domain.host import HostEnvironment


def vcpus(doc: Document) -> None:
    vcpu = ET.SubElement(doc.domain, "vcpu", placement="static")
    vcpu.text = str(doc.spec.cpu.vcpus)
    floating = floating_cpus(doc)
    if floating:
        vcpu.set("cpuset", cpuset.render(floating))


def floating_cpus(doc: Document) -> Collection[int]:
    """The host CPUs a shared VM's vCPUs float over; empty: every CPU (libvirt's default).

    Placement's shared CPUs of the host cells it chose come first (a NUMA-aware shared
    VM). Without cells, a shared VM floats over the host's shared set, as Nova confines
    VMs without a NUMA topology to cpu_shared_set; a host without one keeps the default.
    """
    if doc.placement.shared_cpus:
        return doc.placement.shared_cpus
    if doc.spec.cpu.policy != "shared" or doc.placement.cells or doc.host.shared_cpus is None:
        return ()
    if not doc.host.shared_cpus:
        raise DomainError(
            "cpu.policy shared: this host's cpuSharedSet, less its cpuDedicatedSet, leaves "
            "no CPU for shared VMs"
        )
    return doc.host.shared_cpus


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
    """A VM's <cputune>: its CPU limits, its vCPU pins and its emulator threads' CPUs."""
    pins = sorted((pin.vcpu, pin.pcpu) for cell in doc.placement.cells for pin in cell.vcpu_pins)
    emulator = _emulator_cpus(doc, pins)
    limits = _limits(doc)
    if not pins and not emulator and limits is None:
        return
    tune = ET.SubElement(doc.domain, "cputune")
    if limits is not None:
        _add_limits(tune, limits)
    for vcpu, pcpu in pins:
        ET.SubElement(tune, "vcpupin", vcpu=str(vcpu), cpuset=str(pcpu))
    if emulator:
        ET.SubElement(tune, "emulatorpin", cpuset=cpuset.render(emulator))


def _emulator_cpus(doc: Document, pins: Sequence[tuple[int, int]]) -> Collection[int]:
    if doc.placement.emulator_pins:
        return doc.placement.emulator_pins
    if pins:
        # Without an isolated emulator thread, QEMU's own threads share the pinned CPUs.
        return [pcpu for _, pcpu in pins]
    # libvirt would run them where the vCPUs float anyway; said, so `virsh emulatorpin`
    # shows it and nothing rests on that default.
    return floating_cpus(doc)


def limits(doc: Document) -> None:
    """A system container's <cputune>: its CPU limits only (it has no vCPU threads to pin,
    nor an emulator)."""
    tune = _limits(doc)
    if tune is not None:
        _add_limits(ET.SubElement(doc.domain, "cputune"), tune)


def _limits(doc: Document) -> CpuTune | None:
    # libvirt refuses to start a domain with these when cgroup cpu is unavailable
    # ("cgroup cpu is required for scheduler tuning"), hence cpu_controller.
    return doc.spec.cpu.tune if cpu_controller(doc.host) else None


def _add_limits(tune: ET.Element, limits: CpuTune) -> None:
    if limits.shares is not None:
        ET.SubElement(tune, "shares").text = str(limits.shares)
    if limits.period_microseconds is not None:
        ET.SubElement(tune, "period").text = str(limits.period_microseconds)
    if limits.quota_microseconds is not None:
        ET.SubElement(tune, "quota").text = str(limits.quota_microseconds)


def cpu_controller(host: HostEnvironment) -> bool:
    """Whether libvirt has the cgroup cpu controller here (unknown: assume it has)."""
    return host.cgroup_controllers is None or "cpu" in host.cgroup_controllers


def unenforced(spec: VirtualMachineSpec, host: HostEnvironment) -> list[str]:
    """The CPU limits of `spec` that `cputune` leaves out on this host."""
    if spec.cpu.tune is not None and not cpu_controller(host):
        return ["cpu.tune: the host has no cgroup cpu controller; shares and quota not enforced"]
    return []
