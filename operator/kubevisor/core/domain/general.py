"""Configurators of the elements every domain has, VM or system container: its name,
uuid and kubevisor metadata, its clock and lifecycle actions, and its security label."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from kubevisor.core.domain.document import Document, DomainError
from kubevisor.core.domain.identity import NAMESPACE, domain_name


def identity(doc: Document) -> None:
    """<name>, <uuid> (the VM's uid) and the metadata `identity.read_metadata` reads."""
    ET.SubElement(doc.domain, "name").text = domain_name(doc.ref.namespace, doc.ref.name)
    if doc.ref.uid:
        ET.SubElement(doc.domain, "uuid").text = doc.ref.uid
    metadata = ET.SubElement(doc.domain, "metadata")
    ET.SubElement(
        metadata,
        f"{{{NAMESPACE}}}vm",
        namespace=doc.ref.namespace,
        name=doc.ref.name,
        uid=doc.ref.uid,
        generation=str(doc.ref.generation),
        hardware=doc.ref.hardware,
    )


def lifecycle(doc: Document) -> None:
    ET.SubElement(doc.domain, "clock", offset="utc")
    ET.SubElement(doc.domain, "on_poweroff").text = "destroy"
    ET.SubElement(doc.domain, "on_reboot").text = "restart"
    ET.SubElement(doc.domain, "on_crash").text = "destroy"


def seclabel(doc: Document) -> None:
    """A dynamic per-domain label from the host's security driver, when the VM requires
    confinement; refused where the host has no driver to confine it with."""
    security = doc.spec.security
    if security is None or not security.require_confinement:
        return
    model = doc.host.security_model
    if model is None or model == "none":
        raise DomainError("security.requireConfinement: this host has no libvirt security driver")
    ET.SubElement(doc.domain, "seclabel", type="dynamic", model=model, relabel="yes")
