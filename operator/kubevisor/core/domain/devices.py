"""Configurators of a VM's <devices>: disks and the cloud-init seed, network interfaces,
PCI passthrough, the serial console, and the VNC display."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from kubevisor.api.virtualmachine import MAX_NET_QUEUES, Network
from kubevisor.core.domain.document import Document, DomainError
from kubevisor.core.network import mac

_BUS_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd"}


def disks(doc: Document) -> None:
    used: dict[str, int] = {}
    for disk in doc.spec.disks:
        path = doc.host.disk_paths.get(disk.name)
        if path is None:
            raise DomainError(f"disk {disk.name!r} has no file on this host")
        prefix = _BUS_PREFIX[disk.bus]
        element = ET.SubElement(doc.devices(), "disk", type="file", device="disk")
        driver = ET.SubElement(element, "driver", name="qemu", type="qcow2", cache=disk.cache)
        if disk.io is not None:
            driver.set("io", disk.io)
        if disk.discard is not None:
            driver.set("discard", disk.discard)
        ET.SubElement(element, "source", file=path)
        ET.SubElement(element, "target", dev=_device_name(prefix, used), bus=disk.bus)
        ET.SubElement(element, "alias", name=f"ua-disk-{disk.name}")
        if disk.read_only:
            ET.SubElement(element, "readonly")
    if doc.host.seed_iso is not None:
        element = ET.SubElement(doc.devices(), "disk", type="file", device="cdrom")
        ET.SubElement(element, "driver", name="qemu", type="raw")
        ET.SubElement(element, "source", file=doc.host.seed_iso)
        ET.SubElement(element, "target", dev=_device_name("sd", used), bus="sata")
        ET.SubElement(element, "readonly")


def _device_name(prefix: str, used: dict[str, int]) -> str:
    index = used.get(prefix, 0)
    used[prefix] = index + 1
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return prefix + letters


def not_on_networks(doc: Document) -> None:
    """System containers do not attach to Networks yet (a veth would need the Network's
    port security on a device the agent does not name): refuse them rather than attach
    them to no bridge at all."""
    attached = [repr(network.name) for network in doc.spec.networks if network.network]
    if attached:
        raise DomainError(
            f"networks {', '.join(attached)}: interfaces on a Network are not rendered into "
            "system containers yet (issue 18)"
        )


def interfaces(doc: Document) -> None:
    for network in doc.spec.networks:
        if network.network:
            element = _on_network(doc, network)
        else:
            element = ET.SubElement(doc.devices(), "interface", type=network.type)
            # A MAC of its own, not libvirt's random pick at each define: the interface
            # keeps it through restarts and migrations, live or cold (whose target must
            # render the same device as the source).
            address = network.mac_address or mac.derived(doc.ref.uid, network.name)
            ET.SubElement(element, "mac", address=address)
            if network.type == "network" and network.source:
                ET.SubElement(element, "source", network=network.source)
            elif network.type == "bridge" and network.source:
                ET.SubElement(element, "source", bridge=network.source)
        ET.SubElement(element, "model", type=network.model)
        driver: dict[str, str] = {}
        # vhost-net serves tap devices only; user-mode networking has none.
        if network.model == "virtio" and not network.user_mode and doc.host.vhost_net is not None:
            driver["name"] = "vhost" if doc.host.vhost_net else "qemu"
        queues = min(doc.spec.cpu.vcpus, MAX_NET_QUEUES)
        if network.multiqueue and network.model == "virtio" and queues > 1:
            driver["queues"] = str(queues)
        if driver:
            ET.SubElement(element, "driver", driver)
        ET.SubElement(element, "alias", name=f"ua-net-{network.name}")


def _on_network(doc: Document, network: Network) -> ET.Element:
    """A tap on the Network's bridge, with the allocated MAC and the tap name the host's
    port security matches (so a guest sends from its own MAC and address only)."""
    nic = doc.host.nics.get(network.name)
    if nic is None:
        raise DomainError(
            f"interface {network.name!r} on Network {network.network!r}: not attached on this "
            "host (no allocated MAC and address in status.interfaces, or the Network is not "
            "realised here)"
        )
    element = ET.SubElement(doc.devices(), "interface", type="bridge")
    ET.SubElement(element, "mac", address=nic.mac)
    ET.SubElement(element, "source", bridge=nic.bridge)
    ET.SubElement(element, "target", dev=nic.tap)
    return element


def console(doc: Document) -> None:
    serial = ET.SubElement(doc.devices(), "serial", type="pty")
    if doc.host.serial_log:
        ET.SubElement(serial, "log", file=doc.host.serial_log, append="on")
    ET.SubElement(serial, "target", port="0")
    element = ET.SubElement(doc.devices(), "console", type="pty")
    ET.SubElement(element, "target", type="serial", port="0")


def display(doc: Document) -> None:
    """A VGA card and a VNC server that listens on a UNIX socket only, never on an address.

    libvirt picks the socket's path in the domain's private directory (readable by
    libvirt and QEMU only); the agent reaches the server through
    virDomainOpenGraphicsFD and serves it to users through the console API
    (`kubevisor vnc`, `kubevisor screenshot`).
    """
    graphics = ET.SubElement(doc.devices(), "graphics", type="vnc")
    ET.SubElement(graphics, "listen", type="socket")
    video = ET.SubElement(doc.devices(), "video")
    ET.SubElement(video, "model", type="vga")


def hostdevs(doc: Document) -> None:
    requested = doc.spec.devices.pci if doc.spec.devices is not None else []
    for request in requested:
        addresses = sorted(a.address for a in doc.placement.pci_devices if a.alias == request.alias)
        if len(addresses) != request.count:
            raise DomainError(
                f"devices.pci {request.alias!r}: {request.count} requested, placement "
                f"assigned {len(addresses)}"
            )
        for index, address in enumerate(addresses):
            hostdev = ET.SubElement(
                doc.devices(), "hostdev", mode="subsystem", type="pci", managed="yes"
            )
            source = ET.SubElement(hostdev, "source")
            ET.SubElement(source, "address", _pci_address(address))
            ET.SubElement(hostdev, "alias", name=f"ua-pci-{request.alias}-{index}")


def _pci_address(address: str) -> dict[str, str]:
    domain, bus, rest = address.split(":")
    slot, function = rest.split(".")
    return {
        "domain": f"0x{domain}",
        "bus": f"0x{bus}",
        "slot": f"0x{slot}",
        "function": f"0x{function}",
    }
