"""The configurators of a virtual machine's domain (types kvm, qemu and test), in order.

Each module of the package holds the configurators of one part of the document, as
KubeVirt's converter groups its own: `general` (name, metadata, lifecycle, security
label), `memory`, `cpu`, `firmware` (<os>, <features>) and `devices`.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubevisor.core.domain import cpu, devices, firmware, general, memory
from kubevisor.core.domain.document import Configurator, Document, DomainError


def no_container(doc: Document) -> None:
    """A container spec on a VM host is refused, not booted as a VM that ignores it."""
    if doc.spec.container is not None:
        raise DomainError(
            f"container: a system container needs a host of hypervisor type lxc; this one "
            f"runs virtual machines ({doc.host.domain_type})"
        )


CONFIGURATORS: Sequence[Configurator] = (
    no_container,
    general.identity,
    memory.memory,
    cpu.vcpus,
    cpu.cpu,
    cpu.cputune,
    memory.numatune,
    firmware.boot,
    firmware.features,
    general.lifecycle,
    devices.disks,
    devices.interfaces,
    devices.hostdevs,
    devices.console,
    devices.display,
    memory.balloon,
    general.seclabel,
)
"""Applied in order; libvirt does not care about element order, humans reading diffs do."""
