"""The vSphere driver's pure part: the URI, vSphere's faults as the driver's errors,
domain XML to a VM's configuration, and power states to libvirt's states and events.

Nothing here talks to vCenter; `driver.VsphereHypervisor` does, with these tables.
"""

from __future__ import annotations

import dataclasses
import http.client
import ssl
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from pyVmomi import vim, vmodl

from kubevisor.core import hypervisors
from kubevisor.core.hypervisors import Feature
from kubevisor.drivers import base

SCHEME = "vsphere"
XML_KEY = "kubevisor.domainXml"
HYPERVISOR_TYPE = "vmware"
GUEST_ID = "otherGuest64"

# --- the URI -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Location:
    """Which vCenter (`server`, host[:port]) and which of its hosts (`host`, by name)."""

    server: str
    host: str

    @property
    def uri(self) -> str:
        return f"{SCHEME}://{self.server}/{urllib.parse.quote(self.host)}"

    @property
    def address(self) -> tuple[str, int]:
        parsed = urllib.parse.urlsplit(f"//{self.server}")
        return parsed.hostname or "", parsed.port or 443


def parse_uri(uri: str) -> Location:
    """`vsphere://VCENTER[:PORT]/HOST NAME`; PermanentError for anything else."""
    parsed = urllib.parse.urlsplit(uri)
    host = urllib.parse.unquote(parsed.path.lstrip("/"))
    if parsed.scheme != SCHEME or not parsed.netloc or not host:
        raise base.PermanentError(
            f"not a vSphere host URI: {uri!r} (expected {SCHEME}://VCENTER[:PORT]/HOST)"
        )
    return Location(server=parsed.netloc, host=host)


# --- errors --------------------------------------------------------------------------------

# (fault or exception class, kind, retry delay), first match wins; like libvirt's
# ERROR_KINDS, what is not listed is retryable after DEFAULT_RETRY_DELAY.
FAULT_KINDS: tuple[tuple[type[BaseException], type[base.HypervisorError], float], ...] = (
    (vmodl.fault.ManagedObjectNotFound, base.DomainNotFound, 0.0),
    (vim.fault.InvalidLogin, base.PermanentError, 0.0),
    # Before OSError, its base: a certificate that does not verify will not start to.
    (ssl.SSLCertVerificationError, base.PermanentError, 0.0),
    # The session expired or the connection dropped: logging in again fixes it.
    (vim.fault.NotAuthenticated, base.RetryableError, 2.0),
    (OSError, base.RetryableError, 2.0),
    (http.client.HTTPException, base.RetryableError, 2.0),
    # The VM changed state under us or is busy: the level-triggered caller decides again.
    (vim.fault.InvalidPowerState, base.RetryableError, 1.0),
    (vim.fault.TaskInProgress, base.RetryableError, 1.0),
    (vim.fault.InvalidState, base.RetryableError, 1.0),
    # The request itself is wrong for this vCenter; only a new spec can fix it.
    (vim.fault.DuplicateName, base.PermanentError, 0.0),
    (vim.fault.AlreadyExists, base.PermanentError, 0.0),
    (vim.fault.MigrationFault, base.PermanentError, 0.0),
    (vim.fault.VmConfigFault, base.PermanentError, 0.0),
    (vmodl.fault.InvalidArgument, base.PermanentError, 0.0),
    (vmodl.fault.InvalidRequest, base.PermanentError, 0.0),
    (vmodl.fault.NotSupported, base.PermanentError, 0.0),
    (vim.fault.NoPermission, base.PermanentError, 0.0),
)
DEFAULT_RETRY_DELAY = 5.0
CONNECTION_ERRORS = (vim.fault.NotAuthenticated, OSError, http.client.HTTPException)


def translate_error(error: BaseException, *, doing: str) -> base.HypervisorError:
    """The driver error for a vSphere fault (or a transport error) raised while `doing`."""
    kind, delay = next(
        ((k, d) for cls, k, d in FAULT_KINDS if isinstance(error, cls)),
        (base.RetryableError, DEFAULT_RETRY_DELAY),
    )
    detail = getattr(error, "msg", None) or str(error) or type(error).__name__
    message = f"{doing}: {type(error).__name__}: {detail}"
    if issubclass(kind, base.RetryableError):
        return kind(message, delay=delay)
    return kind(message)


# --- domain XML <-> vSphere ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VmConfig:
    """What `define` takes from the domain XML."""

    name: str
    uuid: str
    memory_mib: int
    vcpus: int


def vm_config(xml: str) -> VmConfig:
    """The name, UUID, memory and vCPUs of a domain XML; PermanentError if it lacks one."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as error:
        raise base.PermanentError(f"invalid domain XML: {error}") from None
    name, uuid = root.findtext("name"), root.findtext("uuid")
    memory = root.find("memory")
    if not name or not uuid or memory is None or not memory.text:
        raise base.PermanentError("domain XML needs <name>, <uuid> and <memory>")
    unit = base.memory_unit_bytes(memory.get("unit"))
    if unit is None:
        raise base.PermanentError(f"unknown memory unit {memory.get('unit')!r}")
    kib = int(memory.text) * unit // 1024
    # vSphere wants memoryMB in multiples of 4.
    mib = -(-kib // 4096) * 4
    return VmConfig(
        name=name.strip(),
        uuid=uuid.strip().lower(),
        memory_mib=mib,
        vcpus=int(root.findtext("vcpu") or "1"),
    )


# The elements `core.domain` renders for spec features, what this driver calls each, and
# the features that render it (any one of them is enough).
RENDERED: tuple[tuple[str, str, frozenset[Feature]], ...] = (
    ("devices/disk", "disks", frozenset({Feature.DISKS, Feature.CLOUD_INIT})),
    ("devices/interface", "network interfaces", frozenset({Feature.NETWORKS})),
    ("devices/filesystem", "a container's root filesystem", frozenset({Feature.CONTAINER})),
    ("devices/hostdev", "PCI passthrough", frozenset({Feature.PCI_PASSTHROUGH})),
    ("os/kernel", "direct kernel boot", frozenset({Feature.KERNEL_BOOT})),
    ("os/loader", "UEFI firmware", frozenset({Feature.UEFI, Feature.SECURE_BOOT})),
    (
        "cputune",
        "CPU pinning and quotas",
        frozenset({Feature.DEDICATED_CPUS, Feature.CPU_TUNE}),
    ),
    (
        "numatune",
        "NUMA placement",
        frozenset({Feature.DEDICATED_CPUS, Feature.GUEST_NUMA, Feature.HUGEPAGES}),
    ),
    ("memoryBacking/hugepages", "huge pages", frozenset({Feature.HUGEPAGES})),
)


def unmapped_elements(supported: frozenset[Feature]) -> tuple[tuple[str, str], ...]:
    """(path, what) of the rendered elements this driver does not map: those of features
    the capability table does not give its type (an element stays refused until every
    feature rendering it is in the table)."""
    return tuple((path, what) for path, what, features in RENDERED if not features <= supported)


# What the agent's domain XML may ask for that this driver does not map (yet), by path:
# derived from core.hypervisors.SUPPORTED["vmware"], so the table is the one place that
# says what a vSphere VM can have.
UNMAPPED = unmapped_elements(hypervisors.supported(HYPERVISOR_TYPE))


def unmapped(xml: str, elements: tuple[tuple[str, str], ...] = UNMAPPED) -> list[str]:
    """What the domain XML asks for that a VM made by this driver would silently lack."""
    root = ET.fromstring(xml)
    return [what for path, what in elements if root.find(path) is not None]


def minimal_xml(*, name: str, uuid: str, memory_mib: int, vcpus: int) -> str:
    """Domain XML for a VM this driver did not define (it has no kept XML)."""
    domain = ET.Element("domain", type=HYPERVISOR_TYPE)
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "uuid").text = uuid
    ET.SubElement(domain, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(domain, "vcpu").text = str(vcpus)
    return ET.tostring(domain, encoding="unicode")


# --- power states, their reasons and the events between them ------------------------------

S = base.DomainState
E = base.EventKind

# runtime.powerState -> the state, and the reason when nothing better is known (a VM found
# suspended was suspended by someone: libvirt's paused reason "user").
POWER_STATES: Mapping[str, tuple[S, str]] = {
    "poweredOn": (S.RUNNING, "unknown"),
    "poweredOff": (S.SHUTOFF, "unknown"),
    "suspended": (S.PAUSED, "user"),
}

# (before, after) -> the lifecycle event libvirt would have sent, and the state reason it
# would give. vSphere does not say who powered a VM off; a VM the driver did not power off
# is taken to have shut down from inside (the guest's own power-off, libvirt's "shutdown").
TRANSITIONS: Mapping[tuple[S, S], tuple[E, str, str]] = {
    (S.SHUTOFF, S.RUNNING): (E.STARTED, "booted", "booted"),
    (S.PAUSED, S.RUNNING): (E.RESUMED, "unpaused", "unpaused"),
    (S.RUNNING, S.PAUSED): (E.SUSPENDED, "paused", "user"),
    (S.RUNNING, S.SHUTOFF): (E.STOPPED, "shutdown", "shutdown"),
    (S.PAUSED, S.SHUTOFF): (E.STOPPED, "destroyed", "destroyed"),
}


def domain_info(*, uuid: str, name: str, power_state: str) -> base.DomainInfo:
    """A VM's runtime.powerState as a DomainInfo, with the state's default reason."""
    state, reason = POWER_STATES.get(power_state, (S.NOSTATE, "unknown"))
    return base.DomainInfo(uuid=uuid, name=name, state=state, reason=reason)


def reasoned(known: base.DomainInfo | None, seen: base.DomainInfo) -> base.DomainInfo:
    """`seen` (just read from vSphere) with the reason the driver knows for its state: the
    known one if the state did not change, the transition's if it did."""
    if known is None:
        return seen
    if known.state is seen.state:
        return dataclasses.replace(seen, reason=known.reason)
    change = TRANSITIONS.get((known.state, seen.state))
    return seen if change is None else dataclasses.replace(seen, reason=change[2])


def observe(
    known: Mapping[str, base.DomainInfo], seen: Mapping[str, base.DomainInfo]
) -> tuple[dict[str, base.DomainInfo], list[base.DomainEvent]]:
    """A poll of the host's VMs (by UUID) against what the driver knew: the new view, with
    reasons, and the lifecycle events between the two.

    A VM that appeared is DEFINED (then STARTED if it runs); one that disappeared (deleted,
    or moved to another host by someone else) is STOPPED if it ran, then UNDEFINED.
    """
    view = {uuid: reasoned(known.get(uuid), info) for uuid, info in seen.items()}
    found: list[base.DomainEvent] = []
    for uuid, now in view.items():
        was = known.get(uuid)
        if was is None:
            found.append(base.DomainEvent(uuid, now.name, E.DEFINED, "added"))
            was = dataclasses.replace(now, state=S.SHUTOFF)
        change = TRANSITIONS.get((was.state, now.state))
        if change is not None:
            found.append(base.DomainEvent(uuid, now.name, change[0], change[1]))
    for uuid, was in known.items():
        if uuid in view:
            continue
        if was.state is not S.SHUTOFF:
            found.append(base.DomainEvent(uuid, was.name, E.STOPPED, "destroyed"))
        found.append(base.DomainEvent(uuid, was.name, E.UNDEFINED, "removed"))
    return view, found


# --- host facts ----------------------------------------------------------------------------


def host_cpus(*, packages: int, cores: int, threads: int) -> tuple[base.HostCpu, ...]:
    """Logical CPUs numbered socket by socket, core by core (vSphere reports only counts)."""
    packages, cores = max(packages, 1), max(cores, 1)
    per_core = max(threads // cores, 1)
    cores_per_package = max(cores // packages, 1)
    cpus = []
    for cpu in range(threads):
        core = cpu // per_core
        first = core * per_core
        cpus.append(
            base.HostCpu(
                id=cpu,
                socket_id=core // cores_per_package,
                core_id=core % cores_per_package,
                siblings=tuple(range(first, first + per_core)),
            )
        )
    return tuple(cpus)


@dataclasses.dataclass(frozen=True)
class Datastores:
    """Capacity and free space of the host's datastores together, in bytes."""

    capacity: int
    free: int
