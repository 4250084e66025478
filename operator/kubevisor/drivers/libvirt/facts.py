"""Pure parsers of what libvirt answers: state, reason and event names, host facts.

libvirt reports states, reasons and events as integers and the host as capabilities XML;
the driver turns them into `base` values here, without a connection (the tests feed them
captured answers).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from kubevisor.api import cpuset
from kubevisor.drivers import base

# --- names of libvirt's state, reason and event enums --------------------------------------

# Indexed by libvirt's enum values, which are consecutive from 0 (tests check every name
# against the libvirt module's constants).
STATES = (
    base.DomainState.NOSTATE,
    base.DomainState.RUNNING,
    base.DomainState.BLOCKED,
    base.DomainState.PAUSED,
    base.DomainState.SHUTDOWN,
    base.DomainState.SHUTOFF,
    base.DomainState.CRASHED,
    base.DomainState.PMSUSPENDED,
)
STATE_REASONS: dict[base.DomainState, tuple[str, ...]] = {
    base.DomainState.NOSTATE: ("unknown",),
    base.DomainState.RUNNING: tuple(
        [
            "unknown",
            "booted",
            "migrated",
            "restored",
            "from_snapshot",
            "unpaused",
            "migration_canceled",
            "save_canceled",
            "wakeup",
            "crashed",
            "postcopy",
            "postcopy_failed",
        ]
    ),
    base.DomainState.BLOCKED: ("unknown",),
    base.DomainState.PAUSED: tuple(
        [
            "unknown",
            "user",
            "migration",
            "save",
            "dump",
            "ioerror",
            "watchdog",
            "from_snapshot",
            "shutting_down",
            "snapshot",
            "crashed",
            "starting_up",
            "postcopy",
            "postcopy_failed",
            "api_error",
        ]
    ),
    base.DomainState.SHUTDOWN: ("unknown", "user"),
    base.DomainState.SHUTOFF: tuple(
        [
            "unknown",
            "shutdown",
            "destroyed",
            "crashed",
            "migrated",
            "saved",
            "failed",
            "from_snapshot",
            "daemon",
        ]
    ),
    base.DomainState.CRASHED: ("unknown", "panicked"),
    base.DomainState.PMSUSPENDED: ("unknown",),
}
EVENT_KINDS = tuple(base.EventKind)  # DEFINED=0 ... CRASHED=8, libvirt's order
EVENT_DETAILS: dict[base.EventKind, tuple[str, ...]] = {
    base.EventKind.DEFINED: ("added", "updated", "renamed", "from_snapshot"),
    base.EventKind.UNDEFINED: ("removed", "renamed"),
    base.EventKind.STARTED: ("booted", "migrated", "restored", "from_snapshot", "wakeup"),
    base.EventKind.SUSPENDED: tuple(
        [
            "paused",
            "migrated",
            "ioerror",
            "watchdog",
            "restored",
            "from_snapshot",
            "api_error",
            "postcopy",
            "postcopy_failed",
        ]
    ),
    base.EventKind.RESUMED: tuple(
        ["unpaused", "migrated", "from_snapshot", "postcopy", "postcopy_failed"]
    ),
    base.EventKind.STOPPED: tuple(
        ["shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from_snapshot"]
    ),
    base.EventKind.SHUTDOWN: ("finished", "guest", "host"),
    base.EventKind.PMSUSPENDED: ("memory", "disk"),
    base.EventKind.CRASHED: ("panicked", "crashloaded"),
}


def _name(names: tuple[str, ...], index: int) -> str:
    return names[index] if 0 <= index < len(names) else f"unknown-{index}"


def domain_state(state: int, reason: int) -> tuple[base.DomainState, str]:
    """libvirt's (state, reason) integers, by name."""
    named = STATES[state] if 0 <= state < len(STATES) else base.DomainState.NOSTATE
    return named, _name(STATE_REASONS[named], reason)


def domain_event(uuid: str, name: str, event: int, detail: int) -> base.DomainEvent:
    """A lifecycle callback's arguments as a DomainEvent."""
    kind = EVENT_KINDS[event] if 0 <= event < len(EVENT_KINDS) else None
    if kind is None:
        return base.DomainEvent(uuid, name, base.EventKind.DEFINED, f"unknown-event-{event}")
    return base.DomainEvent(uuid, name, kind, _name(EVENT_DETAILS[kind], detail))


# --- host facts ----------------------------------------------------------------------------


def version_string(version: int) -> str:
    """libvirt's packed version number (major * 1,000,000 + minor * 1,000 + micro)."""
    return f"{version // 1_000_000}.{version // 1_000 % 1_000}.{version % 1_000}"


def _kib(element: ET.Element | None) -> int:
    if element is None or not element.text:
        return 0
    # An unknown unit is read as KiB.
    return int(element.text) * (base.memory_unit_bytes(element.get("unit")) or 1024) // 1024


def host_facts_from(
    capabilities: str,
    *,
    uri: str,
    hostname: str,
    info: list[Any],
    hypervisor_type: str,
    hypervisor_version: int,
    libvirt_version: int,
    free_memory: dict[int, int],
    free_pages: dict[int, dict[int, int]],
) -> base.HostFacts:
    """HostFacts from the capabilities XML and the other answers of the connection.

    `info` is virConnectGetInfo's list; `free_memory` maps cell -> free bytes and
    `free_pages` cell -> {page size KiB: free pages}, each empty when the host cannot say.
    """
    root = ET.fromstring(capabilities)
    host = root.find("host")
    if host is None:
        raise base.PermanentError("capabilities without <host>")
    cpu = host.find("cpu")
    arch = (cpu.findtext("arch") if cpu is not None else None) or str(info[0])
    cells = []
    for cell in host.iterfind("topology/cells/cell"):
        cell_id = int(cell.get("id", "0"))
        cpus = tuple(
            base.HostCpu(
                id=int(c.get("id", "0")),
                socket_id=int(c.get("socket_id", "0")),
                core_id=int(c.get("core_id", "0")),
                siblings=tuple(sorted(cpuset.parse(c.get("siblings", c.get("id", ""))))),
            )
            for c in cell.iterfind("cpus/cpu")
        )
        pages = tuple(
            base.PageSize(
                size_kib=int(p.get("size", "0")),
                total=int(p.text or 0),
                free=free_pages.get(cell_id, {}).get(int(p.get("size", "0"))),
            )
            for p in cell.iterfind("pages")
        )
        distances = tuple(
            (int(s.get("id", "0")), int(s.get("value", "0")))
            for s in cell.iterfind("distances/sibling")
        )
        free = free_memory.get(cell_id)
        cells.append(
            base.NumaCell(
                id=cell_id,
                memory_kib=_kib(cell.find("memory")),
                free_memory_kib=None if free is None else free // 1024,
                cpus=cpus,
                pages=pages,
                distances=distances,
            )
        )
    domain_types = {
        d.get("type", "")
        for guest in root.iterfind("guest")
        for a in guest.iterfind("arch")
        if a.get("name") == arch
        for d in a.iterfind("domain")
    }
    features = tuple(
        sorted(f.get("name", "") for f in cpu.iterfind("feature")) if cpu is not None else ()
    )
    cell_memory = sum(c.memory_kib for c in cells)
    return base.HostFacts(
        hostname=hostname,
        uuid=host.findtext("uuid"),
        arch=arch,
        cpus=int(info[2]),
        # The cells' memory is exact (KiB); virConnectGetInfo rounds to MiB.
        memory_kib=cell_memory or int(info[1]) * 1024,
        cpu_model=cpu.findtext("model") if cpu is not None else None,
        cpu_vendor=cpu.findtext("vendor") if cpu is not None else None,
        cpu_features=features,
        cells=tuple(cells),
        hypervisor_type=hypervisor_type,
        hypervisor_version=version_string(hypervisor_version),
        libvirt_version=version_string(libvirt_version),
        domain_types=tuple(sorted(domain_types)),
        uri=uri,
        security_models=tuple(
            m.text.strip() for m in host.iterfind("secmodel/model") if m.text and m.text.strip()
        ),
    )


def usable_cpu_models_from(domain_capabilities: str) -> tuple[str, ...]:
    """The named CPU models a domain capabilities XML (virConnectGetDomainCapabilities)
    marks usable, sorted; empty when custom models are not supported at all.

    Models libvirt marks usable='no' (the host CPU or the accelerator lacks a feature) or
    'unknown' (it could not check) are left out: a guest asking for them may not start.
    """
    root = ET.fromstring(domain_capabilities)
    custom = root.find("cpu/mode[@name='custom']")
    if custom is None or custom.get("supported") != "yes":
        return ()
    return tuple(
        sorted(
            {
                m.text.strip()
                for m in custom.iterfind("model")
                if m.get("usable") == "yes" and m.text and m.text.strip()
            }
        )
    )


def pci_device_from(xml: str) -> base.PciDeviceInfo | None:
    """A node device's XML (virNodeDeviceGetXMLDesc) as a PCI device; None if not PCI."""
    root = ET.fromstring(xml)
    cap = root.find("capability[@type='pci']")
    if cap is None:
        return None

    def number(tag: str) -> int:
        return int(cap.findtext(tag) or "0", 0)

    def hex_id(tag: str) -> str:
        element = cap.find(tag)
        return f"{int(element.get('id', '0'), 16):04x}" if element is not None else "0000"

    numa = cap.find("numa")
    node = int(numa.get("node", "-1")) if numa is not None else -1
    return base.PciDeviceInfo(
        address=(
            f"{number('domain'):04x}:{number('bus'):02x}:{number('slot'):02x}."
            f"{number('function'):x}"
        ),
        vendor_id=hex_id("vendor"),
        product_id=hex_id("product"),
        numa_node=node if node >= 0 else None,
    )
