"""Domains as the agent finds them on a `FakeHypervisor`, for the fencing tests."""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET

from agent.fakeapi import NAMESPACE
from kubevisor.core.domain import identity
from kubevisor.drivers.fake import FakeHypervisor


async def running(
    hv: FakeHypervisor, name: str, uid: str | None = None, *, ours: bool = True
) -> str:
    """Define and start a domain, with kubevisor's metadata unless not `ours`; its uid."""
    uid = uid or str(uuidlib.uuid4())
    root = ET.Element("domain", type="qemu")
    ET.SubElement(root, "name").text = f"{NAMESPACE}_{name}"
    ET.SubElement(root, "uuid").text = uid
    if ours:
        metadata = ET.SubElement(root, "metadata")
        ET.SubElement(
            metadata,
            f"{{{identity.NAMESPACE}}}vm",
            namespace=NAMESPACE,
            name=name,
            uid=uid,
            generation="1",
        )
    await hv.define(ET.tostring(root, encoding="unicode"))
    await hv.start(uid)
    return uid


def names(hv: FakeHypervisor, *, active: bool = False) -> set[str]:
    """The VM names of the domains defined (or, `active`, running) on `hv`."""
    return {
        d.name.removeprefix(f"{NAMESPACE}_")
        for d in hv.domains.values()
        if not active or d.info().state.value == "running"
    }
