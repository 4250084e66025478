"""System containers (libvirt LXC, domain type lxc): what a spec may ask of one, and the
configurators of its domain, in order.

A container is processes on the host's kernel in their own namespaces and cgroups, started
from `spec.container` (a root filesystem and an init). It shares the general, memory and
CPU configurators with VMs; <memory> becomes its hard limit in its memory cgroup and
<cputune> shares and quota limit its CPU time.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final

from kubevisor.api.virtualmachine import VirtualMachineSpec
from kubevisor.core import hypervisors
from kubevisor.core.domain import cpu, devices, general, memory
from kubevisor.core.domain.document import Configurator, Document, DomainError
from kubevisor.core.hypervisors import Feature

_FIRMWARE = "firmware: no UEFI (nor Secure Boot) without a guest kernel to boot"
_CPU_MODEL = "cpu.model and features: a container sees the host's CPU as it is"

#: Why a container has none of the features lxc lacks in `hypervisors.SUPPORTED`, each
#: sentence starting with the spec field to change; `{networks}` names the interfaces
#: that ask. In the order a refusal lists them.
WHY_NOT: Final[Mapping[Feature, str]] = MappingProxyType(
    {
        Feature.GUEST_KERNEL: "container: required on an lxc host (a root filesystem and an init)",
        Feature.KERNEL_BOOT: "boot: a container runs no kernel of its own",
        Feature.UEFI: _FIRMWARE,
        Feature.SECURE_BOOT: _FIRMWARE,
        Feature.DISKS: (
            "disks: block devices are for a guest kernel; a container's files are container.rootfs"
        ),
        Feature.CLOUD_INIT: "cloudInit: its config drive is a disk, and a container has none",
        Feature.DEDICATED_CPUS: (
            "cpu.policy dedicated: pins a guest kernel's vCPU threads, and a container has "
            "none (cpu.tune limits it)"
        ),
        Feature.CPU_MODEL: _CPU_MODEL,
        Feature.CPU_FLAGS: _CPU_MODEL,
        Feature.CPU_TOPOLOGY: (
            "cpu sockets, cores and threads: a container sees the host's topology"
        ),
        Feature.GUEST_NUMA: "numa: guest NUMA cells are a guest kernel's topology",
        Feature.HUGEPAGES: "memory.hugepages: they back a guest kernel's RAM, a container has none",
        Feature.MEMORY_BALLOON: "memory.balloon: needs a guest kernel's balloon driver",
        Feature.USER_NETWORKING: (
            "{networks}: type user is QEMU's NAT; a container needs type network or bridge"
        ),
        Feature.MULTIQUEUE: "{networks}: multiqueue is a virtio NIC's, not a veth's",
        Feature.PCI_PASSTHROUGH: "devices.pci: PCI passthrough needs a guest kernel's driver",
    }
)


def unsupported(spec: VirtualMachineSpec) -> list[str]:
    """What in `spec` a libvirt LXC system container cannot do, one reason per field.

    A container is processes on the host's kernel in their own namespaces and cgroups:
    everything that configures a guest kernel, its firmware or its emulated hardware has
    nothing to act on. Which features those are is the lxc row of the hypervisor table
    (`hypervisors.SUPPORTED`, which placement's filter reads too); this adds the reasons.
    `render` refuses such a spec on an lxc host with all the reasons at once, so the VM's
    condition names every field to change.
    """
    lacking = hypervisors.missing("lxc", hypervisors.requested(spec))
    ordered = [feature for feature in WHY_NOT if feature in lacking]
    ordered += sorted(lacking - WHY_NOT.keys())
    # Features that share a sentence (UEFI and Secure Boot) give it once.
    reasons = list(dict.fromkeys(_reason(spec, feature) for feature in ordered))
    # Confinement is judged per host, not per type (`hypervisors`); this one an lxc host
    # can never offer.
    if spec.security is not None and spec.security.require_seccomp_sandbox:
        reasons.append("security.requireSeccompSandbox: it is QEMU's sandbox, and there is no QEMU")
    return reasons


def _reason(spec: VirtualMachineSpec, feature: Feature) -> str:
    why = WHY_NOT.get(feature)
    if why is None:
        # A feature new to the table without a sentence here yet is still refused.
        words, field = hypervisors.WORDS[feature]
        return f"{field or feature.value}: lxc has no {words}"
    asking = [net.name for net in spec.networks if feature in hypervisors.interface_features(net)]
    return why.format(networks="networks " + ", ".join(repr(name) for name in asking))


def supported(doc: Document) -> None:
    reasons = unsupported(doc.spec)
    if reasons:
        raise DomainError("not possible in a system container (lxc): " + "; ".join(reasons))


def init(doc: Document) -> None:
    assert doc.spec.container is not None  # `supported` ran first
    os_el = ET.SubElement(doc.domain, "os")
    ET.SubElement(os_el, "type", arch="x86_64").text = "exe"
    program, *args = doc.spec.container.init
    ET.SubElement(os_el, "init").text = program
    for arg in args:
        ET.SubElement(os_el, "initarg").text = arg


def features(doc: Document) -> None:
    element = ET.SubElement(doc.domain, "features")
    # Without it a container with no <interface> shares the host's network namespace and
    # sees every host NIC; a VM without networks has none, and so does a container.
    ET.SubElement(element, "privnet")


def user_namespace(doc: Document) -> None:
    """<idmap>: the container's root and users are unprivileged ids on the host (a user
    namespace), so root inside owns nothing outside, not even its root filesystem's files
    unless the admin gave them to the mapped ids; none when the host's admin allows
    privileged containers (the agent's --allow-privileged-containers)."""
    ids = doc.host.container_ids
    if ids is None:
        return
    idmap = ET.SubElement(doc.domain, "idmap")
    for kind in ("uid", "gid"):
        ET.SubElement(idmap, kind, start="0", target=str(ids.start), count=str(ids.count))


def root_filesystem(doc: Document) -> None:
    assert doc.spec.container is not None
    element = ET.SubElement(doc.devices(), "filesystem", type="mount")
    ET.SubElement(
        element, "source", dir=doc.host_path("container.rootfs", doc.spec.container.rootfs)
    )
    ET.SubElement(element, "target", dir="/")


def interfaces(doc: Document) -> None:
    """One veth pair per network; the host end joins the libvirt network or bridge."""
    devices.not_on_networks(doc)
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
    cpu.limits,
    init,
    features,
    user_namespace,
    general.lifecycle,
    root_filesystem,
    interfaces,
    console,
    general.seclabel,
)
"""For domain type lxc. <memory> becomes the container's hard limit in its memory cgroup;
<cputune> shares and quota limit its CPU time. <vcpu> is only reported (the container's
processes see every host CPU), and its cpuset, when placement gives one, pins them."""
