"""The vSphere driver: one ESXi host behind a vCenter (or vcsim) as a `base.Hypervisor`.

The node agent speaks libvirt domain XML and names domains by UUID; vSphere names VMs by
managed object and keeps a per-VM `instanceUuid`. `define` reads what vSphere needs from
the XML (name, UUID, memory, vCPUs), creates the VM with both its BIOS `uuid` and its
`instanceUuid` set to the domain's UUID, and keeps the whole XML in the VM's
`extraConfig` under `XML_KEY`, so `domain_xml` returns the same kubevisor metadata
`core.domain.read_metadata` parses. Devices (disks, NICs, consoles) are not mapped yet: the
VM gets the memory and CPUs it asks for, and XML asking for more (`UNMAPPED`) is refused
with a PermanentError naming it rather than run without it.

The URI names the vCenter and the host: `vsphere://VCENTER[:PORT]/HOST NAME` (e.g.
`vsphere://127.0.0.1:8989/DC0_C0_H0`); `migrate`'s `dest_uri` names another host of the same
vCenter the same way, and the move is a vMotion (RelocateVM_Task).

vSphere has lifecycle events, but through its own event manager; this driver polls
instead: a supervisor task logs in (with capped exponential back-off), reads the power
state of every VM on the host once per `poll_interval` with one PropertyCollector call, and
publishes what changed as `DomainEvent`s (`observe`), and `ConnectionEvent`s when the
session is lost and regained. pyvmomi blocks, so every call runs in a worker thread
(`asyncio.to_thread`).

vSphere's "suspended" is a suspend to disk, not a pause of the vCPUs; it is the nearest
thing vSphere has, and the driver reports it as PAUSED with libvirt's reason "user".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import logging
import ssl
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

from pyVim import connect as vim_connect
from pyVim import task as vim_task
from pyVmomi import vim, vmodl

from kubevisor.core.migration import JobStats
from kubevisor.drivers import base, events
from kubevisor.drivers.supervisor import backoff_delays

log = logging.getLogger(__name__)
T = TypeVar("T")

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
_CONNECTION_ERRORS = (vim.fault.NotAuthenticated, OSError, http.client.HTTPException)


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


_UNIT_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024}
_UNIT_KIB |= {"m": 1024, "mib": 1024, "mb": 1000**2 / 1024, "g": 1024**2, "gib": 1024**2}


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
    factor = _UNIT_KIB.get(memory.get("unit", "KiB").lower())
    if factor is None:
        raise base.PermanentError(f"unknown memory unit {memory.get('unit')!r}")
    kib = int(memory.text) * factor
    # vSphere wants memoryMB in multiples of 4.
    mib = -(-int(kib) // 4096) * 4
    return VmConfig(
        name=name.strip(),
        uuid=uuid.strip().lower(),
        memory_mib=mib,
        vcpus=int(root.findtext("vcpu") or "1"),
    )


# What the agent's domain XML may ask for that this driver does not map (yet), by path.
UNMAPPED: tuple[tuple[str, str], ...] = (
    ("devices/disk", "disks"),
    ("devices/interface", "network interfaces"),
    ("devices/filesystem", "shared filesystems"),
    ("devices/hostdev", "PCI passthrough"),
    ("os/kernel", "direct kernel boot"),
    ("os/loader", "UEFI firmware"),
    ("cputune", "CPU pinning and quotas"),
    ("numatune", "NUMA placement"),
    ("memoryBacking/hugepages", "huge pages"),
)


def unmapped(xml: str) -> list[str]:
    """What the domain XML asks for that a VM made by this driver would silently lack."""
    root = ET.fromstring(xml)
    return [what for path, what in UNMAPPED if root.find(path) is not None]


def minimal_xml(*, name: str, uuid: str, memory_mib: int, vcpus: int) -> str:
    """Domain XML for a VM this driver did not define (it has no kept XML)."""
    domain = ET.Element("domain", type=HYPERVISOR_TYPE)
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "uuid").text = uuid
    ET.SubElement(domain, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(domain, "vcpu").text = str(vcpus)
    return ET.tostring(domain, encoding="unicode")


# --- power states, their reasons and the events between them ------------------------------

# runtime.powerState -> the state, and the reason when nothing better is known (a VM found
# suspended was suspended by someone: libvirt's paused reason "user").
POWER_STATES: Mapping[str, tuple[base.DomainState, str]] = {
    "poweredOn": (base.DomainState.RUNNING, "unknown"),
    "poweredOff": (base.DomainState.SHUTOFF, "unknown"),
    "suspended": (base.DomainState.PAUSED, "user"),
}

# (before, after) -> the lifecycle event libvirt would have sent, and the state reason it
# would give. vSphere does not say who powered a VM off; a VM the driver did not power off
# is taken to have shut down from inside (the guest's own power-off, libvirt's "shutdown").
TRANSITIONS: Mapping[tuple[base.DomainState, base.DomainState], tuple[base.EventKind, str, str]] = {
    (base.DomainState.SHUTOFF, base.DomainState.RUNNING): (
        base.EventKind.STARTED,
        "booted",
        "booted",
    ),
    (base.DomainState.PAUSED, base.DomainState.RUNNING): (
        base.EventKind.RESUMED,
        "unpaused",
        "unpaused",
    ),
    (base.DomainState.RUNNING, base.DomainState.PAUSED): (
        base.EventKind.SUSPENDED,
        "paused",
        "user",
    ),
    (base.DomainState.RUNNING, base.DomainState.SHUTOFF): (
        base.EventKind.STOPPED,
        "shutdown",
        "shutdown",
    ),
    (base.DomainState.PAUSED, base.DomainState.SHUTOFF): (
        base.EventKind.STOPPED,
        "destroyed",
        "destroyed",
    ),
}


def domain_info(*, uuid: str, name: str, power_state: str) -> base.DomainInfo:
    """A VM's runtime.powerState as a DomainInfo, with the state's default reason."""
    state, reason = POWER_STATES.get(power_state, (base.DomainState.NOSTATE, "unknown"))
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
            found.append(base.DomainEvent(uuid, now.name, base.EventKind.DEFINED, "added"))
            was = dataclasses.replace(now, state=base.DomainState.SHUTOFF)
        change = TRANSITIONS.get((was.state, now.state))
        if change is not None:
            found.append(base.DomainEvent(uuid, now.name, change[0], change[1]))
    for uuid, was in known.items():
        if uuid in view:
            continue
        if was.state is not base.DomainState.SHUTOFF:
            found.append(base.DomainEvent(uuid, was.name, base.EventKind.STOPPED, "destroyed"))
        found.append(base.DomainEvent(uuid, was.name, base.EventKind.UNDEFINED, "removed"))
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


# --- the driver ----------------------------------------------------------------------------

_VM_PROPERTIES = ["name", "config.instanceUuid", "runtime.powerState", "runtime.host"]
S = base.DomainState
E = base.EventKind


class VsphereHypervisor:
    """A `base.Hypervisor` for the host named by a `vsphere://` URI.

    Use as `async with VsphereHypervisor(uri, username=..., password=...) as hypervisor:`
    or call `connect()`/`close()`. `verify_tls=False` accepts any certificate (vcsim's is
    self-signed).

    The driver keeps its view of the host's VMs (`_known`, with the reasons of their
    states); its own operations update the view and publish their events at once, and the
    poller publishes what others changed. A poll that overlapped an operation is dropped
    (`_generation`), so an operation's event is never published twice or with the
    poller's guessed reason.
    """

    def __init__(
        self,
        uri: str,
        *,
        username: str,
        password: str,
        verify_tls: bool = True,
        poll_interval: float = 1.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self._location = parse_uri(uri)
        self._credentials = (username, password)
        self._verify_tls = verify_tls
        self._poll_interval = poll_interval
        self._backoff = (backoff_initial, backoff_max)
        self._si: vim.ServiceInstance | None = None
        self._host: vim.HostSystem | None = None
        self._known: dict[str, base.DomainInfo] = {}
        self._generation = 0
        self._acting = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._events = events.Broadcaster()
        self._closed = False

    @property
    def uri(self) -> str:
        return self._location.uri

    async def __aenter__(self) -> VsphereHypervisor:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- connection ---

    async def connect(self) -> None:
        if self._closed:
            raise base.PermanentError(f"driver for {self.uri} is closed")
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(
                self._supervise(), name=f"vsphere-connection {self.uri}"
            )
        connected = asyncio.ensure_future(self._connected.wait())
        done, _ = await asyncio.wait(
            {connected, self._supervisor}, return_when=asyncio.FIRST_COMPLETED
        )
        if connected not in done:
            connected.cancel()
            self._supervisor.result()  # re-raise what killed the supervisor

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            # A supervisor that died (bad credentials, no such host) told `connect` already.
            with contextlib.suppress(asyncio.CancelledError, base.HypervisorError):
                await self._supervisor
        if self._si is not None:
            await self._logout(self._si)
            self._si = None
        self._connected.clear()
        self._events.end()

    async def _supervise(self) -> None:
        delays = backoff_delays(*self._backoff)
        while True:
            try:
                si, host = await asyncio.to_thread(self._login)
                seen = await asyncio.to_thread(self._domains, si, host)
            except ssl.SSLCertVerificationError as error:
                raise translate_error(error, doing=f"connecting to {self.uri}") from None
            except _CONNECTION_ERRORS as error:
                delay = next(delays)
                log.warning(
                    "connecting to %s failed, retrying in %.1fs: %s", self.uri, delay, error
                )
                await asyncio.sleep(delay)
                continue
            except vmodl.MethodFault as error:
                raise translate_error(error, doing=f"connecting to {self.uri}") from None
            delays = backoff_delays(*self._backoff)
            # What changed while disconnected is not published: the agent resyncs on
            # ConnectionEvent(connected=True).
            self._si, self._host = si, host
            self._known = observe(self._known, seen)[0]
            self._connected.set()
            log.info("connected to %s", self.uri)
            self._events.publish(base.ConnectionEvent(self.uri, connected=True))
            reason = await self._watch(si, host)
            self._connected.clear()
            self._si = self._host = None
            log.warning("lost connection to %s: %s", self.uri, reason)
            self._events.publish(base.ConnectionEvent(self.uri, False, reason))
            await self._logout(si)

    def _login(self) -> tuple[vim.ServiceInstance, vim.HostSystem]:
        hostname, port = self._location.address
        username, password = self._credentials
        context = ssl.create_default_context()
        if not self._verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        si = vim_connect.SmartConnect(
            host=hostname, port=port, user=username, pwd=password, sslContext=context
        )
        return si, self._find_host(si, self._location.host)

    @staticmethod
    async def _logout(si: vim.ServiceInstance) -> None:
        with contextlib.suppress(vmodl.MethodFault, *_CONNECTION_ERRORS):
            await asyncio.to_thread(vim_connect.Disconnect, si)

    def _find_host(self, si: vim.ServiceInstance, name: str) -> vim.HostSystem:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
        try:
            for host in view.view:
                if host.name == name:
                    return host
        finally:
            view.Destroy()
        raise base.PermanentError(f"vCenter {self._location.server} has no host named {name!r}")

    async def _watch(self, si: vim.ServiceInstance, host: vim.HostSystem) -> str:
        """Poll the host's VMs and publish what others changed, until the session fails."""
        while True:
            await asyncio.sleep(self._poll_interval)
            generation = self._generation
            if self._acting:
                continue
            try:
                seen = await asyncio.to_thread(self._domains, si, host)
            except _CONNECTION_ERRORS as error:
                return f"{type(error).__name__}: {error}"
            except vmodl.MethodFault as error:
                log.warning("polling %s: %s", self.uri, translate_error(error, doing="polling"))
                continue
            if generation != self._generation:
                continue  # an operation ran meanwhile and published its own events
            self._known, changes = observe(self._known, seen)
            for event in changes:
                self._events.publish(event)

    def events(self) -> AsyncIterator[base.Event]:
        return self._events.subscribe()

    # --- calls ---

    async def _call(self, doing: str, fn: Callable[[vim.ServiceInstance], T]) -> T:
        si = self._si
        if si is None:
            raise base.RetryableError(f"{doing}: not connected to {self.uri}", delay=2.0)
        try:
            return await asyncio.to_thread(fn, si)
        except base.HypervisorError:
            raise
        except (vmodl.MethodFault, *_CONNECTION_ERRORS) as error:
            raise translate_error(error, doing=doing) from None

    async def _act(self, doing: str, fn: Callable[[vim.ServiceInstance], T]) -> T:
        """`_call` for an operation that changes VMs: no poll overlaps it."""
        self._acting += 1
        self._generation += 1
        try:
            return await self._call(doing, fn)
        finally:
            self._acting -= 1
            self._generation += 1

    def _record(
        self, uuid: str, info: base.DomainInfo | None, *changes: tuple[base.EventKind, str]
    ) -> None:
        """An operation's result: the driver's view of the VM (None: gone) and its events."""
        known = self._known.get(uuid)
        name = info.name if info else known.name if known else ""
        if info is None:
            self._known.pop(uuid, None)
        else:
            self._known[uuid] = info
        for kind, detail in changes:
            self._events.publish(base.DomainEvent(uuid, name, kind, detail))

    def _domains(self, si: vim.ServiceInstance, host: vim.HostSystem) -> dict[str, base.DomainInfo]:
        """Every VM on `host` by UUID (default reasons), in one PropertyCollector call.

        The view holds the VMs of the host's cluster (or standalone compute resource),
        not of the whole vCenter; `runtime.host` picks this host's.
        """
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(host.parent, [vim.VirtualMachine], True)
        collector = vmodl.query.PropertyCollector
        try:
            spec = collector.FilterSpec(
                objectSet=[
                    collector.ObjectSpec(
                        obj=view,
                        skip=True,
                        selectSet=[
                            collector.TraversalSpec(
                                name="view", path="view", skip=False, type=vim.view.ContainerView
                            )
                        ],
                    )
                ],
                propSet=[collector.PropertySpec(type=vim.VirtualMachine, pathSet=_VM_PROPERTIES)],
            )
            contents = content.propertyCollector.RetrieveContents([spec])
        finally:
            view.Destroy()
        found = {}
        for item in contents:
            props = {p.name: p.val for p in item.propSet}
            uuid, on_host = props.get("config.instanceUuid"), props.get("runtime.host")
            # runtime.host, not host.vm: vcsim's vMotion moves only the former.
            if not uuid or on_host is None or on_host._moId != host._moId:
                continue
            found[uuid] = domain_info(
                uuid=uuid, name=props.get("name", ""), power_state=props["runtime.powerState"]
            )
        return found

    def _vm(self, si: vim.ServiceInstance, uuid: str) -> vim.VirtualMachine:
        """The VM with that instance UUID on this host; DomainNotFound if none is here."""
        vm = si.RetrieveContent().searchIndex.FindByUuid(None, uuid, True, True)
        try:
            on = vm.runtime.host if vm is not None else None
        except vmodl.fault.ManagedObjectNotFound:
            on = None  # deleted since the search
        host = self._host
        if on is None or host is None:
            raise base.DomainNotFound(f"no VM {uuid} on {self.uri}")
        if on._moId != host._moId:
            raise base.DomainNotFound(f"VM {uuid} is on {on.name}, not {self.uri}")
        return vm

    @staticmethod
    def _wait(si: vim.ServiceInstance, task: vim.Task) -> Any:
        """Block until the task ends; raises its fault if it failed."""
        vim_task.WaitForTask(task, si=si)
        return task.info.result

    def _connected_host(self) -> vim.HostSystem:
        if self._host is None:
            raise base.RetryableError(f"not connected to {self.uri}", delay=2.0)
        return self._host

    # --- the host ---

    async def host_facts(self) -> base.HostFacts:
        def read(si: vim.ServiceInstance) -> base.HostFacts:
            host = self._connected_host()
            hardware, summary = host.hardware, host.summary
            cpu = hardware.cpuInfo
            used_mib = summary.quickStats.overallMemoryUsage or 0
            memory_kib = hardware.memorySize // 1024
            cell = base.NumaCell(
                id=0,
                memory_kib=memory_kib,
                free_memory_kib=max(memory_kib - used_mib * 1024, 0),
                cpus=host_cpus(
                    packages=cpu.numCpuPackages, cores=cpu.numCpuCores, threads=cpu.numCpuThreads
                ),
                pages=(),
            )
            about = si.RetrieveContent().about
            datastores = sum(d.summary.capacity for d in host.datastore)
            return base.HostFacts(
                hostname=host.name,
                uuid=hardware.systemInfo.uuid,
                arch="x86_64",
                cpus=cpu.numCpuThreads,
                memory_kib=memory_kib,
                cpu_model=summary.hardware.cpuModel,
                cpu_vendor=hardware.cpuPkg[0].vendor if hardware.cpuPkg else None,
                cpu_features=(),
                cells=(cell,),
                hypervisor_type=HYPERVISOR_TYPE,
                hypervisor_version=summary.config.product.version,
                # No libvirt here: the vCenter's API version stands in.
                libvirt_version=about.apiVersion,
                domain_types=(HYPERVISOR_TYPE,),
                uri=self.uri,
                disk_bytes=datastores,
            )

        return await self._call("reading host facts", read)

    async def datastores(self) -> Datastores:
        """The host's datastores' capacity and free space (the agent's disk capacity)."""

        def read(_si: vim.ServiceInstance) -> Datastores:
            stores = [d.summary for d in self._connected_host().datastore]
            return Datastores(
                capacity=sum(s.capacity for s in stores), free=sum(s.freeSpace for s in stores)
            )

        return await self._call("reading datastores", read)

    async def pci_devices(self) -> list[base.PciDeviceInfo]:
        # Passthrough on vSphere is set up per host by its admin; none is offered here.
        return []

    # --- domains ---

    async def define(self, xml: str) -> base.DomainInfo:
        config = vm_config(xml)
        if missing := unmapped(xml):
            raise base.PermanentError(
                f"defining {config.name}: the vSphere driver cannot give a VM "
                f"{', '.join(missing)} yet (it maps memory and vCPUs only)"
            )

        def define(si: vim.ServiceInstance) -> tuple[bool, str]:
            spec = vim.vm.ConfigSpec(
                name=config.name,
                memoryMB=config.memory_mib,
                numCPUs=config.vcpus,
                extraConfig=[vim.option.OptionValue(key=XML_KEY, value=xml)],
            )
            try:
                vm = self._vm(si, config.uuid)
            except base.DomainNotFound:
                vm = self._create(si, config, spec)
                return True, vm.runtime.powerState
            self._wait(si, vm.ReconfigVM_Task(spec=spec))
            return False, vm.runtime.powerState

        created, power_state = await self._act(f"defining {config.name}", define)
        seen = domain_info(uuid=config.uuid, name=config.name, power_state=power_state)
        info = reasoned(self._known.get(config.uuid), seen)
        self._record(config.uuid, info, (E.DEFINED, "added" if created else "updated"))
        return info

    def _create(
        self, si: vim.ServiceInstance, config: VmConfig, spec: vim.vm.ConfigSpec
    ) -> vim.VirtualMachine:
        elsewhere = si.RetrieveContent().searchIndex.FindByUuid(None, config.uuid, True, True)
        if elsewhere is not None:
            raise base.PermanentError(
                f"VM {config.uuid} already exists on host {elsewhere.runtime.host.name} "
                "of this vCenter"
            )
        host = self._connected_host()
        spec.uuid = spec.instanceUuid = config.uuid
        spec.guestId = GUEST_ID
        spec.files = vim.vm.FileInfo(vmPathName=f"[{host.datastore[0].name}]")
        datacenter = host.parent
        while not isinstance(datacenter, vim.Datacenter):
            datacenter = datacenter.parent
        task = datacenter.vmFolder.CreateVM_Task(
            config=spec, pool=host.parent.resourcePool, host=host
        )
        vm: vim.VirtualMachine = self._wait(si, task)
        return vm

    async def _power(
        self,
        uuid: str,
        doing: str,
        act: Callable[[vim.VirtualMachine], vim.Task | None],
        *,
        becomes: tuple[base.DomainState, str],
        event: tuple[base.EventKind, str],
    ) -> None:
        """One power operation: `act` returns its task, or None when there is nothing to do;
        if it ran, the VM `becomes` (state, reason) with `event`."""

        def power(si: vim.ServiceInstance) -> str | None:
            vm = self._vm(si, uuid)
            task = act(vm)
            if task is None:
                return None
            self._wait(si, task)
            return str(vm.name)

        name = await self._act(f"{doing} {uuid}", power)
        if name is not None:
            self._record(uuid, base.DomainInfo(uuid, name, *becomes), event)

    async def start(self, uuid: str) -> None:
        await self._power(
            uuid,
            "starting",
            lambda vm: vm.PowerOnVM_Task() if vm.runtime.powerState == "poweredOff" else None,
            becomes=(S.RUNNING, "booted"),
            event=(E.STARTED, "booted"),
        )

    async def destroy(self, uuid: str) -> None:
        await self._power(
            uuid,
            "powering off",
            lambda vm: vm.PowerOffVM_Task() if vm.runtime.powerState != "poweredOff" else None,
            becomes=(S.SHUTOFF, "destroyed"),
            event=(E.STOPPED, "destroyed"),
        )

    async def suspend(self, uuid: str) -> None:
        # Suspending a powered-off VM fails with InvalidPowerState: retryable, like libvirt.
        await self._power(
            uuid,
            "suspending",
            lambda vm: vm.SuspendVM_Task() if vm.runtime.powerState != "suspended" else None,
            becomes=(S.PAUSED, "user"),
            event=(E.SUSPENDED, "paused"),
        )

    async def resume(self, uuid: str) -> None:
        def resume(vm: vim.VirtualMachine) -> vim.Task | None:
            if vm.runtime.powerState == "poweredOff":
                raise base.RetryableError(f"resuming {uuid}: it is powered off", delay=1.0)
            return vm.PowerOnVM_Task() if vm.runtime.powerState == "suspended" else None

        await self._power(
            uuid,
            "resuming",
            resume,
            becomes=(S.RUNNING, "unpaused"),
            event=(E.RESUMED, "unpaused"),
        )

    async def shutdown(self, uuid: str, *, timeout: float) -> base.ShutdownOutcome:
        """Ask the guest (through VMware Tools) to shut down and power it off after
        `timeout` s; at once when it cannot be asked (no Tools running, or suspended)."""

        def ask(si: vim.ServiceInstance) -> tuple[str, bool]:
            vm = self._vm(si, uuid)
            power_state = str(vm.runtime.powerState)
            if power_state != "poweredOn":
                return power_state, False
            try:
                vm.ShutdownGuest()
            except (vim.fault.ToolsUnavailable, vim.fault.InvalidPowerState):
                return power_state, False
            return power_state, True

        power_state, asked = await self._call(f"shutting down {uuid}", ask)
        if power_state == "poweredOff":
            return base.ShutdownOutcome.ALREADY_OFF
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Not an operation of its own (`_act`): polls go on while the guest takes its time.
        while asked and (remaining := deadline - loop.time()) > 0:
            info = await self.state(uuid)
            if info.state is S.SHUTOFF:
                if self._known.get(uuid, info).state is not S.SHUTOFF:
                    # (the poller has not seen it yet; `info`'s reason is the transition's)
                    self._record(uuid, info, (E.STOPPED, "shutdown"))
                return base.ShutdownOutcome.GRACEFUL
            await asyncio.sleep(min(self._poll_interval, remaining))
        await self.destroy(uuid)
        return base.ShutdownOutcome.FORCED

    async def undefine(self, uuid: str) -> None:
        def undefine(si: vim.ServiceInstance) -> bool | None:
            try:
                vm = self._vm(si, uuid)
            except base.DomainNotFound:
                return None
            was_on = str(vm.runtime.powerState) != "poweredOff"
            # Deleted by someone else meanwhile: gone all the same.
            with contextlib.suppress(vmodl.fault.ManagedObjectNotFound):
                if was_on:
                    self._wait(si, vm.PowerOffVM_Task())
                self._wait(si, vm.Destroy_Task())
            return was_on

        was_on = await self._act(f"undefining {uuid}", undefine)
        if was_on is not None:
            stopped = [(E.STOPPED, "destroyed")] if was_on else []
            self._record(uuid, None, *stopped, (E.UNDEFINED, "removed"))

    async def state(self, uuid: str) -> base.DomainInfo:
        def read(si: vim.ServiceInstance) -> base.DomainInfo:
            vm = self._vm(si, uuid)
            return domain_info(uuid=uuid, name=vm.name, power_state=vm.runtime.powerState)

        seen = await self._call(f"reading the state of {uuid}", read)
        return reasoned(self._known.get(uuid), seen)

    async def list_domains(self) -> list[base.DomainInfo]:
        def read(si: vim.ServiceInstance) -> dict[str, base.DomainInfo]:
            return self._domains(si, self._connected_host())

        seen = await self._call("listing VMs", read)
        return [reasoned(self._known.get(uuid), info) for uuid, info in seen.items()]

    async def domain_xml(self, uuid: str) -> str:
        """The XML the VM was defined from; a minimal one for VMs defined by others."""

        def read(si: vim.ServiceInstance) -> str:
            config = self._vm(si, uuid).config
            for option in config.extraConfig:
                if option.key == XML_KEY:
                    return str(option.value)
            return minimal_xml(
                name=config.name,
                uuid=uuid,
                memory_mib=config.hardware.memoryMB,
                vcpus=config.hardware.numCPU,
            )

        return await self._call(f"reading the XML of {uuid}", read)

    # --- live migration (vMotion) ---

    async def migrate(
        self,
        uuid: str,
        *,
        dest_uri: str,
        xml: str | None = None,
        bandwidth_mibps: int | None = None,
        auto_converge: bool = False,
        post_copy: bool = False,
        max_downtime_ms: int | None = None,
        migrate_uri: str | None = None,
        copy_disks: Sequence[str] = (),
        shared_disks: bool = False,
    ) -> None:
        """vMotion to the host `dest_uri` names, in the same vCenter.

        vCenter runs the transfer itself: `xml`, the bandwidth, downtime, post-copy and
        migrate URI options have no vMotion counterpart and are ignored; the disks stay on
        datastores the hosts share, so there is nothing to copy (`copy_disks` must be empty).
        """
        target = parse_uri(dest_uri)
        if target.server != self._location.server:
            raise base.PermanentError(
                f"migrating {uuid}: {dest_uri} is not in vCenter {self._location.server}; "
                "vMotion across vCenters is not supported"
            )
        if copy_disks:
            raise base.PermanentError(
                f"migrating {uuid}: copying disks {list(copy_disks)} (storage vMotion) "
                "is not supported"
            )

        def relocate(si: vim.ServiceInstance) -> None:
            vm = self._vm(si, uuid)
            if vm.runtime.powerState != "poweredOn":
                raise base.PermanentError(f"migrating {uuid}: live migration needs it running")
            host = self._find_host(si, target.host)
            spec = vim.vm.RelocateSpec(host=host, pool=host.parent.resourcePool)
            self._wait(si, vm.RelocateVM_Task(spec=spec))

        await self._act(f"migrating {uuid} to {target.host}", relocate)
        self._record(uuid, None, (E.STOPPED, "migrated"), (E.UNDEFINED, "removed"))

    async def job_stats(self, uuid: str) -> JobStats | None:
        # vMotion's progress is a task percentage, with none of the figures JobStats holds.
        return None

    async def abort_job(self, uuid: str) -> None:
        raise base.PermanentError(f"aborting the migration of {uuid}: not supported on vSphere")

    async def start_post_copy(self, uuid: str) -> None:
        raise base.PermanentError(f"post-copy for {uuid}: vMotion has no post-copy mode")

    async def set_max_downtime(self, uuid: str, ms: int) -> None:
        raise base.PermanentError(f"max downtime for {uuid}: vMotion does not take one")

    async def set_bandwidth(self, uuid: str, mibps: int) -> None:
        raise base.PermanentError(f"bandwidth for {uuid}: vMotion does not take a limit")
