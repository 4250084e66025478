"""Which VirtualMachine a domain belongs to, and which of its spec it was made from.

Every domain kubevisor defines carries a `<metadata>` element in kubevisor's namespace
with the VM's namespace, name, uid, generation and hardware fingerprint (written by
`core.domain.general.identity`). `read_metadata` parses it back: that is how an agent
recognises its own domains after a restart and fences strays, and how it tells that a
running domain predates a spec change (condition RestartRequired).
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from kubevisor.api.virtualmachine import VirtualMachine, VirtualMachineSpec

NAMESPACE = "https://kubevisor.io/xmlns/domain/v1alpha1"
PREFIX = "kubevisor"
ET.register_namespace(PREFIX, NAMESPACE)


@dataclass(frozen=True, slots=True)
class VmRef:
    """Which VirtualMachine object a domain belongs to (from the domain's metadata)."""

    namespace: str
    name: str
    uid: str
    generation: int
    hardware: str = ""
    """Fingerprint of the spec parts baked into the domain (see hardware_fingerprint)."""


HARDWARE_FIELDS = (
    "cpu",
    "memory",
    "numa",
    "disks",
    "boot",
    "cloud_init",
    "container",
    "networks",
    "firmware",
    "security",
    "devices",
)


def hardware_fingerprint(spec: VirtualMachineSpec) -> str:
    """A short hash of the spec parts that only take effect when the domain is redefined.

    The agent compares it with the fingerprint in a running domain's metadata to tell
    the user (condition RestartRequired) that a change waits for a restart.
    """
    # Defaults left out: a new API field with a default must not make every running VM
    # look changed (RestartRequired) after an upgrade.
    parts = spec.model_dump(
        mode="json", by_alias=True, include=set(HARDWARE_FIELDS), exclude_defaults=True
    )
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def domain_name(namespace: str, name: str) -> str:
    """The libvirt domain name of a VM; unique per host because '_' is not valid in either."""
    return f"{namespace}_{name}"


def vm_ref(vm: VirtualMachine) -> VmRef:
    """The metadata a domain rendered for `vm` carries."""
    meta = vm.metadata
    return VmRef(
        namespace=str(meta.get("namespace", "default")),
        name=str(meta["name"]),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation", 0)),
        hardware=hardware_fingerprint(vm.spec),
    )


def read_metadata(xml: str) -> VmRef | None:
    """The VM a domain's XML says it belongs to, or None for domains kubevisor did not make."""
    root = ET.fromstring(xml)
    element = root.find(f"metadata/{{{NAMESPACE}}}vm")
    if element is None:
        return None
    try:
        return VmRef(
            namespace=element.attrib["namespace"],
            name=element.attrib["name"],
            uid=element.attrib["uid"],
            generation=int(element.attrib.get("generation", "0")),
            hardware=element.attrib.get("hardware", ""),
        )
    except (KeyError, ValueError):
        return None
