"""Configurators of how the guest boots: <os> (machine type, UEFI loader and variables,
direct kernel boot or the first disk) and <features> (ACPI, APIC, SMM)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from kubevisor.core.domain.document import Document
from kubevisor.core.domain.host import BootFiles


def boot(doc: Document) -> None:
    firmware = doc.spec.firmware
    secure = firmware is not None and firmware.secure_boot
    os_el = ET.SubElement(doc.domain, "os")
    # Secure Boot needs SMM so that only the firmware can write its variables, and QEMU
    # offers SMM with pflash only on q35.
    machine = "q35" if secure else "pc"
    ET.SubElement(os_el, "type", arch="x86_64", machine=machine).text = "hvm"
    if firmware is not None and firmware.type == "uefi":
        ovmf = doc.host.ovmf
        loader = ET.SubElement(os_el, "loader", readonly="yes", type="pflash")
        if secure:
            loader.set("secure", "yes")
        loader.text = ovmf.secure_code if secure else ovmf.code
        nvram = ET.SubElement(
            os_el, "nvram", template=ovmf.secure_vars_template if secure else ovmf.vars_template
        )
        if doc.host.nvram is not None:
            nvram.text = doc.host.nvram
    direct = doc.spec.boot
    files: BootFiles | None = None
    if direct is not None and direct.kernel:
        files = BootFiles(
            kernel=doc.host_path("boot.kernel", direct.kernel),
            initrd=doc.host_path("boot.initrd", direct.initrd) if direct.initrd else None,
            cmdline=direct.cmdline,
        )
    elif not doc.spec.disks and doc.host.default_boot is not None:
        files = doc.host.default_boot
    if files is None:
        ET.SubElement(os_el, "boot", dev="hd")
        return
    ET.SubElement(os_el, "kernel").text = files.kernel
    if files.initrd:
        ET.SubElement(os_el, "initrd").text = files.initrd
    if files.cmdline:
        ET.SubElement(os_el, "cmdline").text = files.cmdline


def features(doc: Document) -> None:
    element = ET.SubElement(doc.domain, "features")
    # ACPI is what lets a graceful shutdown reach the guest.
    ET.SubElement(element, "acpi")
    ET.SubElement(element, "apic")
    if doc.spec.firmware is not None and doc.spec.firmware.secure_boot:
        ET.SubElement(element, "smm", state="on")
