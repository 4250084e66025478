"""System containers (libvirt LXC, domain type lxc): what a spec may ask of one, and the
configurators of its domain, in order.

A container is processes on the host's kernel in their own namespaces and cgroups, started
from `spec.container` (a root filesystem and an init). It shares the general, memory and
CPU configurators with VMs; <memory> becomes its hard limit in its memory cgroup and
<cputune> shares and quota limit its CPU time.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from kubevisor.api.virtualmachine import VirtualMachineSpec
from kubevisor.core.domain import cpu, general, memory
from kubevisor.core.domain.document import Configurator, Document, DomainError


def unsupported(spec: VirtualMachineSpec) -> list[str]:
    """What in `spec` a libvirt LXC system container cannot do, one reason per field.

    A container is processes on the host's kernel in their own namespaces and cgroups:
    everything that configures a guest kernel, its firmware or its emulated hardware has
    nothing to act on. `render` refuses such a spec on an lxc host with all the reasons at
    once, so the VM's condition names every field to change; placement can ask the same
    question before it picks an lxc host.
    """
    cpu_spec, memory_spec = spec.cpu, spec.memory
    reasons = []
    if spec.container is None:
        reasons.append("container: required on an lxc host (a root filesystem and an init)")
    if spec.boot is not None:
        reasons.append("boot: a container runs no kernel of its own")
    if spec.firmware is not None and (spec.firmware.type == "uefi" or spec.firmware.secure_boot):
        reasons.append("firmware: no UEFI (nor Secure Boot) without a guest kernel to boot")
    if spec.disks:
        reasons.append(
            "disks: block devices are for a guest kernel; a container's files are container.rootfs"
        )
    if spec.cloud_init is not None:
        reasons.append("cloudInit: its config drive is a disk, and a container has none")
    if (
        cpu_spec.policy == "dedicated"
        or cpu_spec.thread_policy is not None
        or cpu_spec.isolate_emulator_thread
    ):
        reasons.append(
            "cpu.policy dedicated: pins a guest kernel's vCPU threads, and a container has "
            "none (cpu.tune limits it)"
        )
    if cpu_spec.model is not None or cpu_spec.features or cpu_spec.disabled_features:
        reasons.append("cpu.model and features: a container sees the host's CPU as it is")
    if cpu_spec.sockets or cpu_spec.cores or cpu_spec.threads:
        reasons.append("cpu sockets, cores and threads: a container sees the host's topology")
    if spec.numa is not None:
        reasons.append("numa: guest NUMA cells are a guest kernel's topology")
    if memory_spec.hugepages is not None:
        reasons.append("memory.hugepages: they back a guest kernel's RAM, a container has none")
    if memory_spec.balloon is not None:
        reasons.append("memory.balloon: needs a guest kernel's balloon driver")
    for network in spec.networks:
        if network.type == "user":
            reasons.append(
                f"networks {network.name!r}: type user is QEMU's NAT; a container needs "
                "type network or bridge"
            )
        if network.multiqueue:
            reasons.append(f"networks {network.name!r}: multiqueue is a virtio NIC's, not a veth's")
    if spec.devices is not None and spec.devices.pci:
        reasons.append("devices.pci: PCI passthrough needs a guest kernel's driver")
    if spec.security is not None and spec.security.require_seccomp_sandbox:
        reasons.append("security.requireSeccompSandbox: it is QEMU's sandbox, and there is no QEMU")
    return reasons


def supported(doc: Document) -> None:
    reasons = unsupported(doc.spec)
    if reasons:
        raise DomainError("not possible in a system container (lxc): " + "; ".join(reasons))


def init(doc: Document) -> None:
    assert doc.spec.container is not None  # `supported` ran first
    os_el = ET.SubElement(doc.domain, "os")
    ET.SubElement(os_el, "type", arch="x86_64").text = "exe"
    init, *args = doc.spec.container.init
    ET.SubElement(os_el, "init").text = init
    for arg in args:
        ET.SubElement(os_el, "initarg").text = arg


def features(doc: Document) -> None:
    element = ET.SubElement(doc.domain, "features")
    # Without it a container with no <interface> shares the host's network namespace and
    # sees every host NIC; a VM without networks has none, and so does a container.
    ET.SubElement(element, "privnet")


def root_filesystem(doc: Document) -> None:
    assert doc.spec.container is not None
    element = ET.SubElement(doc.devices(), "filesystem", type="mount")
    ET.SubElement(element, "source", dir=doc.spec.container.rootfs)
    ET.SubElement(element, "target", dir="/")


def interfaces(doc: Document) -> None:
    """One veth pair per network; the host end joins the libvirt network or bridge."""
    for network in doc.spec.networks:
        element = ET.SubElement(doc.devices(), "interface", type=network.type)
        attribute = "network" if network.type == "network" else "bridge"
        ET.SubElement(element, "source", {attribute: str(network.source)})


def console(doc: Document) -> None:
    # libvirt LXC has no console log file; the console stays attachable as a pty.
    element = ET.SubElement(doc.devices(), "console", type="pty")
    ET.SubElement(element, "target", type="lxc", port="0")


CONFIGURATORS: Sequence[Configurator] = (
    supported,
    general.identity,
    memory.memory,
    cpu.vcpus,
    cpu.cputune,
    init,
    features,
    general.lifecycle,
    root_filesystem,
    interfaces,
    console,
    general.seclabel,
)
"""For domain type lxc. <memory> becomes the container's hard limit in its memory cgroup;
<cputune> shares and quota limit its CPU time. <vcpu> is only reported (the container's
processes see every host CPU), and its cpuset, when placement gives one, pins them."""
