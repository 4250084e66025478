"""The shape every hypervisor driver has, and the values and errors it speaks in.

The node agent holds one `Hypervisor` (a `LibvirtHypervisor` or `VsphereHypervisor` in
production, a `FakeHypervisor` in the agent's unit tests) and calls it with domain XML built by
`core.domain`. Domains are named by UUID, which the agent takes from the VM. Every method is
a coroutine that never blocks the agent's event loop; `events()` delivers lifecycle events
in libvirt's names as they happen (the vSphere driver polls for them), so the agent never
polls state (its periodic resync is only a safety net, run after
`ConnectionEvent(connected=True)` and on a slow timer).

Failures come in two kinds: `RetryableError` (try again after `delay`
seconds: the daemon is restarting, the domain is mid-transition) and `PermanentError`
(retrying the same request cannot help: the XML is invalid, the host cannot run that
configuration). `DomainNotFound` is permanent for the call that raised it, and the agent
usually treats it as "already gone". `MigrationAborted` is what `migrate` raises when the
migration job was aborted (by `abort_job`, or by an operator with `virsh domjobabort`): the
guest still runs on the source, and nothing should retry it without a new decision.

Live migration is driven from the source host: `migrate` runs the whole transfer and
returns once the guest runs on the destination, while other tasks watch it with
`job_stats` and steer it with `abort_job`, `start_post_copy`, `set_max_downtime` and
`set_bandwidth` (the source agent's monitor, deciding with `core.migration.judge`).

`open_console` attaches to a domain's serial console (the agent's console endpoint
bridges it to `kubevisor console`), `open_display` connects to its VNC display and
`screenshot` takes a PNG of its screen; a driver without them raises ConsoleUnsupported.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol, Self

# The driver speaks core's values for a domain's state and a migration job's statistics
# (re-exported): the agent hands them to core as they are.
from kubevisor.core.convergence import DomainState as DomainState
from kubevisor.core.migration import JobStats as JobStats


class HypervisorError(Exception):
    """Base of the driver's errors; `code` is the underlying (libvirt) error code, if any."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class RetryableError(HypervisorError):
    """Worth retrying after `delay` seconds, without changing the request."""

    def __init__(self, message: str, *, code: int | None = None, delay: float = 5.0) -> None:
        super().__init__(message, code=code)
        self.delay = delay


class PermanentError(HypervisorError):
    """Retrying the same request cannot succeed; the spec or the host must change first."""


class DomainNotFound(PermanentError):
    """No domain with that UUID on this hypervisor."""


class MigrationAborted(PermanentError):
    """The migration job was aborted before it completed; the guest stays on the source."""


class ConsoleBusy(HypervisorError):
    """The domain's console cannot be attached now: it is not running, or another session
    holds it (and the caller did not ask to take it over)."""


class ConsoleUnsupported(PermanentError):
    """This driver (or this domain) offers no serial console, or no display."""


class EventKind(enum.Enum):
    """libvirt's virDomainEventType (the lifecycle event's kind), by name."""

    DEFINED = "defined"
    UNDEFINED = "undefined"
    STARTED = "started"
    SUSPENDED = "suspended"
    RESUMED = "resumed"
    STOPPED = "stopped"
    SHUTDOWN = "shutdown"
    PMSUSPENDED = "pmsuspended"
    CRASHED = "crashed"


# Bytes in one of libvirt's memory units (`unit=` of <memory> in domain and capabilities
# XML), by lower-case name; an element without `unit` is in KiB.
_MEMORY_UNITS = {"b": 1, "bytes": 1, "k": 1024, "kib": 1024, "kb": 1000}
_MEMORY_UNITS |= {"m": 1024**2, "mib": 1024**2, "mb": 1000**2, "g": 1024**3, "gib": 1024**3}


def memory_unit_bytes(unit: str | None) -> int | None:
    """Bytes in one libvirt memory `unit` (None: KiB, the default), or None when libvirt
    knows no such unit; each driver decides what an unknown one means."""
    return _MEMORY_UNITS.get((unit or "KiB").lower())


class ShutdownOutcome(enum.Enum):
    """How `Hypervisor.shutdown` ended."""

    GRACEFUL = "graceful"  # the guest powered off within the timeout
    FORCED = "forced"  # the timeout passed and the domain was destroyed
    ALREADY_OFF = "already-off"


@dataclasses.dataclass(frozen=True)
class DomainInfo:
    """A domain as the hypervisor reports it; `reason` is libvirt's state reason by name."""

    uuid: str
    name: str
    state: DomainState
    reason: str
    persistent: bool = True


@dataclasses.dataclass(frozen=True)
class DomainEvent:
    """A lifecycle event of one domain; `detail` is libvirt's event detail by name."""

    uuid: str
    name: str
    kind: EventKind
    detail: str


@dataclasses.dataclass(frozen=True)
class ConnectionEvent:
    """The driver lost (connected=False) or regained (connected=True) its hypervisor.

    Events may have been missed in between: on reconnection the agent resyncs its domains.
    """

    uri: str
    connected: bool
    reason: str = ""


Event = DomainEvent | ConnectionEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class VcpuStats:
    """One vCPU's cumulative times in seconds; None where the hypervisor does not say.
    `wait` is time the vCPU thread waited for I/O, `delay` time it was runnable but waited
    for a host CPU (the host-side view of the guest's steal time)."""

    id: int
    time: float
    wait: float | None = None
    delay: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class BlockStats:
    """One disk's cumulative I/O since the domain started; times in seconds."""

    device: str  # target dev, e.g. "vda"
    read_bytes: int = 0
    write_bytes: int = 0
    read_requests: int = 0
    write_requests: int = 0
    flush_requests: int = 0
    read_seconds: float = 0.0
    write_seconds: float = 0.0
    flush_seconds: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class InterfaceStats:
    """One NIC's cumulative traffic since the domain started, as the host's tap sees it."""

    device: str  # the host-side interface, e.g. "vnet3"
    rx_bytes: int = 0
    rx_packets: int = 0
    rx_drops: int = 0
    rx_errors: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    tx_drops: int = 0
    tx_errors: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemoryStats:
    """A domain's memory in bytes; None where the hypervisor (or the guest's balloon
    driver, for `unused`, `available` and `usable`) does not report it."""

    actual: int | None = None  # what the balloon leaves the guest now
    maximum: int | None = None  # the balloon's ceiling (<memory>)
    rss: int | None = None  # resident set of the QEMU process on the host
    unused: int | None = None  # free inside the guest
    available: int | None = None  # the guest's total as it sees it
    usable: int | None = None  # reclaimable without swapping, as the guest says
    swap_in: int | None = None
    swap_out: int | None = None
    major_faults: int | None = None
    minor_faults: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DomainStats:
    """One domain's usage counters at one moment (`Hypervisor.domain_stats`), for the
    agent's per-VM metrics. Counters are cumulative since the domain started."""

    uuid: str
    name: str
    state: DomainState
    cpu_seconds: float | None = None  # the whole QEMU process, user + system
    cpu_user_seconds: float | None = None
    cpu_system_seconds: float | None = None
    vcpus: tuple[VcpuStats, ...] = ()
    memory: MemoryStats = MemoryStats()
    blocks: tuple[BlockStats, ...] = ()
    interfaces: tuple[InterfaceStats, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class DomainDiagnostics:
    """What only the host knows of one domain, for `kubevisor diagnose`
    (`Hypervisor.domain_diagnostics`): libvirt's `domstats` record as `key=value` lines
    and the tail of QEMU's log. A part the driver cannot supply is None, and `missing`
    says why, by part ("domstats", "qemu.log")."""

    domstats: str | None = None
    qemu_log: str | None = None
    missing: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PageSize:
    """Pages of one size in one NUMA cell; `free` is None when the hypervisor cannot say."""

    size_kib: int
    total: int
    free: int | None


@dataclasses.dataclass(frozen=True)
class HostCpu:
    """One logical CPU; `siblings` are the logical CPUs sharing its core (itself included)."""

    id: int
    socket_id: int
    core_id: int
    siblings: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class NumaCell:
    """One NUMA cell of the host."""

    id: int
    memory_kib: int
    free_memory_kib: int | None
    cpus: tuple[HostCpu, ...]
    pages: tuple[PageSize, ...]
    distances: tuple[tuple[int, int], ...] = ()  # (cell id, distance)


@dataclasses.dataclass(frozen=True)
class HostFacts:
    """What the agent publishes in its HypervisorHost status and placement decides on."""

    hostname: str
    uuid: str | None
    arch: str
    cpus: int
    memory_kib: int
    cpu_model: str | None
    cpu_vendor: str | None
    cpu_features: tuple[str, ...]
    cells: tuple[NumaCell, ...]
    hypervisor_type: str  # e.g. "QEMU", "TEST"
    hypervisor_version: str  # e.g. "7.2.22"
    libvirt_version: str  # e.g. "9.0.0"
    domain_types: tuple[str, ...]  # what <domain type=...> the host accepts: "qemu", "kvm"
    uri: str
    # libvirt's security drivers for domains (<secmodel>): "apparmor", "selinux", "dac",
    # "none"; empty when the host reports none.
    security_models: tuple[str, ...] = ()
    # The named guest CPU models (libvirt's domain capabilities, <mode name='custom'>
    # models with usable='yes'), sorted, per domain type ("qemu", "kvm"): what
    # <cpu mode='custom'><model>NAME</model> can run here. A domain type is missing when
    # the hypervisor cannot say (libvirt's test driver has no domain capabilities).
    usable_cpu_models: Mapping[str, tuple[str, ...]] = dataclasses.field(
        default_factory=dict, hash=False
    )
    # Bytes of the storage VM disks live on when the hypervisor keeps its own (vSphere's
    # datastores); None: the agent's image directory, on the host itself (libvirt).
    disk_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class PciDeviceInfo:
    """One host PCI device as libvirt's node device API reports it.

    `address` is domain:bus:slot.function in lower-case hex ("0000:3b:02.1"); the ids are
    four lower-case hex digits ("8086"); `numa_node` is None when the host does not say.
    """

    address: str
    vendor_id: str
    product_id: str
    numa_node: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class MigrationRequest:
    """What `Hypervisor.migrate` is asked to do: where to, and how.

    `xml` is the domain as the destination must define and run it (re-rendered for the
    target's pCPUs); None keeps the source's. `bandwidth_mibps` None or 0 is unlimited.
    `post_copy` only permits `start_post_copy` later; it switches nothing by itself.
    `migrate_uri` is where the destination's QEMU listens (e.g. "tcp://10.0.0.2"); None
    lets the destination pick (its hostname, or qemu.conf's migration_host).
    `copy_disks` names the disks (target devs, e.g. "vda") on host-local storage whose
    top image is copied along (the destination has created the same overlays on the
    same base images: libvirt's incremental non-shared storage migration).
    `shared_disks` says the other writable disks are on storage the admin declared
    shared (HypervisorHost spec.sharedStorage): trusted even where the hypervisor
    cannot tell that the filesystem is shared.
    """

    dest_uri: str
    xml: str | None = None
    bandwidth_mibps: int | None = None
    auto_converge: bool = False
    post_copy: bool = False
    max_downtime_ms: int | None = None
    migrate_uri: str | None = None
    copy_disks: Sequence[str] = ()
    shared_disks: bool = False


class Console(Protocol):
    """A bidirectional byte stream to a running domain's serial console (`open_console`)."""

    async def read(self) -> bytes:
        """The next bytes the guest wrote; b"" once the stream has ended."""

    async def write(self, data: bytes) -> None:
        """Send `data` to the guest's console (its tty's input)."""

    async def close(self) -> None:
        """Detach; the domain keeps running."""


class StreamConsole:
    """A `Console` over a socket's asyncio streams (a VNC server's connection)."""

    READ_SIZE = 64 * 1024

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        """The next bytes the other end sent; b"" once it closed."""
        try:
            return await self._reader.read(self.READ_SIZE)
        except ConnectionError:
            return b""

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


class ConsoleOutput:
    """What a console session has yet to read: the guest's bytes in order, then the end.

    The drivers' `Console`s (libvirt's `SerialConsole`, the fake's `FakeConsole`) put what
    the guest writes here and `read` from it; once `end` is called every read returns b"".
    Not thread-safe: a driver that receives on another thread hands over through the
    event loop (`call_soon_threadsafe`).
    """

    def __init__(self) -> None:
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()

    def put(self, data: bytes) -> None:
        self._chunks.put_nowait(data)

    def end(self) -> None:
        self._chunks.put_nowait(None)

    async def read(self) -> bytes:
        chunk = await self._chunks.get()
        if chunk is None:
            self._chunks.put_nowait(None)  # every later read sees the end too
            return b""
        return chunk


class Connects(abc.ABC):
    """A driver that connects and closes (libvirt's, vSphere's), also usable as
    `async with driver:`: connected inside, closed on the way out."""

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Hypervisor(Protocol):
    """One hypervisor host, driven by the node agent."""

    @property
    def uri(self) -> str: ...

    async def connect(self) -> None:
        """Connect (retrying with back-off until it works) and keep reconnecting after losses."""

    async def close(self) -> None:
        """Disconnect for good; `events()` iterators end."""

    async def host_facts(self) -> HostFacts: ...

    async def pci_devices(self) -> list[PciDeviceInfo]:
        """Every PCI device of the host (libvirt node devices), for the passthrough
        inventory; which of them are offered is the agent's business."""

    async def define(self, xml: str) -> DomainInfo:
        """Define (or redefine) a persistent domain from XML; it is not started."""

    async def start(self, uuid: str, *, paused: bool = False) -> None:
        """Start a defined domain; no-op if it is already active. `paused` starts it with
        its vCPUs stopped (a cold migration moves it so, before it boots)."""

    async def shutdown(self, uuid: str, *, timeout: float) -> ShutdownOutcome:
        """Ask the guest to power off (ACPI); destroy it if it has not within `timeout` s."""

    async def destroy(self, uuid: str) -> None:
        """Power off immediately; no-op if it is not active."""

    async def suspend(self, uuid: str) -> None:
        """Pause the vCPUs; no-op if already paused."""

    async def resume(self, uuid: str) -> None:
        """Resume paused vCPUs; no-op if running."""

    async def undefine(self, uuid: str) -> None:
        """Destroy if active, then remove the domain and its managed save, snapshot and
        checkpoint metadata and NVRAM; no-op if there is no such domain."""

    async def state(self, uuid: str) -> DomainInfo:
        """Raises DomainNotFound when there is no such domain."""

    async def list_domains(self) -> list[DomainInfo]: ...

    async def domain_xml(self, uuid: str) -> str:
        """The live XML of an active domain, the persistent one otherwise."""

    async def domain_stats(self) -> list[DomainStats]:
        """Usage counters of every domain, in one bulk request to the hypervisor
        (libvirt's virConnectGetAllDomainStats), for the agent's per-VM metrics; a
        driver that cannot say (vSphere) returns an empty list."""

    async def domain_diagnostics(self, uuid: str, *, lines: int) -> DomainDiagnostics:
        """The domain's statistics (all of libvirt's groups, `virsh domstats`) and the last
        `lines` lines of its QEMU log, for `kubevisor diagnose`; raises DomainNotFound."""

    def events(self) -> AsyncIterator[Event]:
        """Lifecycle and connection events from now on, until `close()`.

        Each call is an independent subscriber; iterate it from the agent's event loop.
        """
        ...

    async def open_console(self, uuid: str, *, force: bool = False) -> Console:
        """Attach to the running domain's serial console; `force` takes it over from
        another session (whose stream then ends).

        Raises DomainNotFound, ConsoleBusy (not running, or held by another session),
        ConsoleUnsupported (the driver has no consoles), or another HypervisorError when
        the console cannot be opened.
        """

    async def open_display(self, uuid: str) -> Console:
        """A new client connection to the running domain's VNC display: RFB bytes from
        the server's first one, authentication already skipped (the caller authorized).

        Raises DomainNotFound, ConsoleBusy (not running), ConsoleUnsupported (no display),
        or another HypervisorError.
        """

    async def screenshot(self, uuid: str) -> bytes:
        """The running domain's screen now, as PNG; raises like `open_display`."""

    # --- live migration (source side) ---

    async def migrate(self, uuid: str, request: MigrationRequest) -> None:
        """Live-migrate a running domain as `request` says; return once it runs on
        `request.dest_uri`, is persistent there and is gone from here.

        Raises MigrationAborted after `abort_job`, other HypervisorErrors on failure; either
        way the guest still runs on the source unless the job had switched to post-copy.
        """

    async def job_stats(self, uuid: str) -> JobStats | None:
        """Statistics of the domain's running migration job; None when none runs."""

    async def abort_job(self, uuid: str) -> None:
        """Abort the domain's running migration (its `migrate` raises MigrationAborted);
        no-op when no job runs. PermanentError once in post-copy: it can no longer abort."""

    async def start_post_copy(self, uuid: str) -> None:
        """Switch the running migration to post-copy: the guest resumes on the destination
        and pulls the pages it still lacks. PermanentError unless `migrate` ran with
        `post_copy=True` and a migration is in progress."""

    async def set_max_downtime(self, uuid: str, ms: int) -> None:
        """The longest pause allowed for the final switch-over of the running migration."""

    async def set_bandwidth(self, uuid: str, mibps: int) -> None:
        """Cap the running migration's bandwidth in MiB/s; 0 is unlimited."""
