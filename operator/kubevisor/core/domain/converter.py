"""A VirtualMachine and the host it is bound to -> its libvirt domain XML.

Called by the agent to define a VM's domain, and by migrations to render it for the
target's CPUs. The VM's `status.placement` (the controller's decision: NUMA cells, pins,
PCI devices) and the `HostEnvironment` (what the agent knows of its host and prepared
for the VM) go in; the configurators of `core.domain.vm`, or of `core.domain.container`
on an lxc host, build the document one concern each.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from kubevisor.api.virtualmachine import PlacementStatus, VirtualMachine
from kubevisor.core.domain import container, cpu, memory, vm
from kubevisor.core.domain.document import Document
from kubevisor.core.domain.host import HostEnvironment
from kubevisor.core.domain.identity import vm_ref


def render(machine: VirtualMachine, *, host: HostEnvironment) -> str:
    """The complete domain XML for `machine` on a host described by `host`; raises
    `document.DomainError` when the VM cannot be expressed there."""
    domain = ET.Element("domain", type=host.domain_type)
    doc = Document(
        domain=domain,
        spec=machine.spec,
        placement=_placement(machine),
        host=host,
        ref=vm_ref(machine),
    )
    configurators = container.CONFIGURATORS if host.domain_type == "lxc" else vm.CONFIGURATORS
    for configure in configurators:
        configure(doc)
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")


def unenforced_limits(machine: VirtualMachine, host: HostEnvironment) -> list[str]:
    """Limits of `machine` (its spec and placement) the host cannot enforce, so `render`
    leaves them out.

    The agent shows them in the VM's status (Conditions name each limit
    the host leaves unenforced): the VM still runs, unlimited, rather than failing to start.
    """
    return cpu.unenforced(machine.spec, host) + memory.unenforced(_placement(machine), host)


def _placement(machine: VirtualMachine) -> PlacementStatus:
    """The controller's decision for the VM; none yet reads as no cells, pins or devices."""
    status = machine.status
    return status.placement if status and status.placement else PlacementStatus()
