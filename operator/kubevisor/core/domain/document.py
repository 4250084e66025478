"""The domain document under construction, which every configurator adds to.

A configurator is a function of one `Document` that adds one concern to it (an element,
or a check that raises `DomainError`); `core.domain.vm` and `core.domain.container` list
them in order and `core.domain.converter.render` applies them. ElementTree builds the
document, so every user-supplied string lands in an attribute or a text node and is
escaped by the library: no name, label or user-data can change the XML's structure.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

from kubevisor.api.virtualmachine import PlacementStatus, VirtualMachineSpec
from kubevisor.core.domain.host import HostEnvironment
from kubevisor.core.domain.identity import VmRef


@dataclass(frozen=True, slots=True)
class Document:
    """One domain being rendered: its root element and everything it is made from."""

    domain: ET.Element
    spec: VirtualMachineSpec
    placement: PlacementStatus
    host: HostEnvironment
    ref: VmRef

    def devices(self) -> ET.Element:
        """The <devices> element, created by the first configurator that adds a device."""
        found = self.domain.find("devices")
        return found if found is not None else ET.SubElement(self.domain, "devices")

    def host_path(self, field: str, path: str) -> str:
        """The real path the agent resolved the spec's `field` (e.g. boot.kernel) to, inside
        a directory the host allows; `path` as written when the caller resolved nothing."""
        if self.host.host_paths is None:
            return path
        resolved = self.host.host_paths.get(field)
        if resolved is None:
            raise DomainError(f"{field}: {path} was not resolved inside an allowed directory")
        return resolved


Configurator = Callable[[Document], None]


class DomainError(ValueError):
    """The VM cannot be expressed as a domain on this host (a permanent error)."""
