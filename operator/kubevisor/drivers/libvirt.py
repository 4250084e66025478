"""The libvirt driver: one `LibvirtHypervisor` per libvirt URI, held by the node agent.

Blocking libvirt calls run on a small thread pool of the driver, so the agent's event loop
never blocks. libvirt delivers events on its own event loop, which is process-wide: it runs
in one daemon thread (`libvirt-events`), and its callbacks hand each event to the agent's
loop with `call_soon_threadsafe`. A supervisor task owns the connection: it connects,
registers the lifecycle and close callbacks, waits for the connection to drop (libvirtd
restarted, keepalive timed out, EOF), publishes `ConnectionEvent`s and reconnects with
capped exponential back-off.

libvirt errors become `RetryableError` / `PermanentError` / `DomainNotFound` through the
`ERROR_KINDS` table; an aborted migration becomes `MigrationAborted`.

A live migration occupies one of the pool's threads for its whole transfer
(virDomainMigrateToURI3 blocks until the guest runs on the destination) and runs on a
connection of its own: on the shared connection, which has the lifecycle callback
registered, every other call (job statistics, even a domain's state) stalled behind the
migration's reply until the transfer ended (libvirt 9.0; seen on the local test hosts).
Job statistics, abort, post-copy and tuning calls use the shared connection meanwhile;
libvirt allows them during the migration's async job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import threading
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar

import libvirt

from kubevisor.core.migration import JobStats
from kubevisor.drivers import base, events

log = logging.getLogger(__name__)
T = TypeVar("T")

# --- errors --------------------------------------------------------------------------------

# libvirt error code name -> (kind, retry delay in seconds). Codes not listed are retryable
# after DEFAULT_RETRY_DELAY: most unlisted failures (QEMU failing to start, internal errors)
# are worth another try, and the error's message still reaches the VM's conditions.
ERROR_KINDS: dict[str, tuple[type[base.HypervisorError], float]] = {
    "VIR_ERR_NO_DOMAIN": (base.DomainNotFound, 0.0),
    # The connection or the daemon is gone or busy: reconnecting fixes it.
    "VIR_ERR_SYSTEM_ERROR": (base.RetryableError, 2.0),
    "VIR_ERR_RPC": (base.RetryableError, 2.0),
    "VIR_ERR_NO_CONNECT": (base.RetryableError, 2.0),
    "VIR_ERR_INVALID_CONN": (base.RetryableError, 2.0),
    "VIR_ERR_AUTH_UNAVAILABLE": (base.RetryableError, 5.0),
    "VIR_ERR_OPERATION_TIMEOUT": (base.RetryableError, 5.0),
    "VIR_ERR_AGENT_UNRESPONSIVE": (base.RetryableError, 5.0),
    "VIR_ERR_OPERATION_ABORTED": (base.RetryableError, 2.0),
    # The domain changed state under us (e.g. it stopped while we paused it): the
    # level-triggered caller re-reads the state and decides again.
    "VIR_ERR_OPERATION_INVALID": (base.RetryableError, 1.0),
    # The request itself is wrong for this host; only a new spec can fix it.
    "VIR_ERR_XML_ERROR": (base.PermanentError, 0.0),
    "VIR_ERR_XML_DETAIL": (base.PermanentError, 0.0),
    "VIR_ERR_XML_INVALID_SCHEMA": (base.PermanentError, 0.0),
    "VIR_ERR_CONFIG_UNSUPPORTED": (base.PermanentError, 0.0),
    "VIR_ERR_INVALID_ARG": (base.PermanentError, 0.0),
    "VIR_ERR_ARGUMENT_UNSUPPORTED": (base.PermanentError, 0.0),
    "VIR_ERR_NO_SUPPORT": (base.PermanentError, 0.0),
    "VIR_ERR_OPERATION_UNSUPPORTED": (base.PermanentError, 0.0),
    "VIR_ERR_OPERATION_DENIED": (base.PermanentError, 0.0),
    "VIR_ERR_AUTH_FAILED": (base.PermanentError, 0.0),
    "VIR_ERR_NO_OS": (base.PermanentError, 0.0),
    "VIR_ERR_NO_KERNEL": (base.PermanentError, 0.0),
    "VIR_ERR_CPU_INCOMPATIBLE": (base.PermanentError, 0.0),
    "VIR_ERR_MIGRATE_UNSAFE": (base.PermanentError, 0.0),
}
DEFAULT_RETRY_DELAY = 5.0
_CONNECTION_ERRORS = frozenset(
    getattr(libvirt, name)
    for name in (
        "VIR_ERR_SYSTEM_ERROR",
        "VIR_ERR_RPC",
        "VIR_ERR_NO_CONNECT",
        "VIR_ERR_INVALID_CONN",
    )
)
_CODE_KINDS = {getattr(libvirt, n): kind for n, kind in ERROR_KINDS.items() if hasattr(libvirt, n)}


def translate_error(error: libvirt.libvirtError, *, doing: str) -> base.HypervisorError:
    """The driver error for a libvirt error raised while `doing` something."""
    code = error.get_error_code()
    kind, delay = _CODE_KINDS.get(code, (base.RetryableError, DEFAULT_RETRY_DELAY))
    message = f"{doing}: {error.get_error_message() or error}"
    if issubclass(kind, base.RetryableError):
        return kind(message, code=code, delay=delay)
    return kind(message, code=code)


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


def cpu_list(text: str) -> tuple[int, ...]:
    """A libvirt CPU list such as "0-3,8,10-11"."""
    cpus: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return tuple(cpus)


def _kib(element: ET.Element | None) -> int:
    if element is None or not element.text:
        return 0
    factor = {"b": 1 / 1024, "bytes": 1 / 1024, "kib": 1, "k": 1, "mib": 1024, "m": 1024}
    factor |= {"gib": 1024**2, "g": 1024**2}
    return int(int(element.text) * factor.get(element.get("unit", "KiB").lower(), 1))


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
                siblings=cpu_list(c.get("siblings", c.get("id", ""))),
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


# --- libvirt's process-wide event loop -----------------------------------------------------

_event_loop_lock = threading.Lock()
_event_loop_thread: threading.Thread | None = None


def _ignore_libvirt_error(_opaque: object, _error: object) -> None:
    """libvirt prints every error to stderr by default; ours arrive as exceptions instead."""


def _run_libvirt_events() -> None:
    while True:
        if libvirt.virEventRunDefaultImpl() < 0:
            log.error("libvirt event loop iteration failed")


def ensure_event_loop() -> None:
    """Start libvirt's event loop thread, once per process.

    libvirt allows one event loop implementation per process, and a connection delivers
    events only if the implementation was registered before it was opened, so this runs
    before every open. It is the one piece of process state in the driver.
    """
    global _event_loop_thread
    with _event_loop_lock:
        if _event_loop_thread is not None:
            return
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        libvirt.virEventRegisterDefaultImpl()
        _event_loop_thread = threading.Thread(
            target=_run_libvirt_events, name="libvirt-events", daemon=True
        )
        _event_loop_thread.start()


# --- the driver ----------------------------------------------------------------------------

_UNDEFINE_EVERYTHING = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
)
# What drivers without NVRAM or checkpoints (the test driver) accept; LXC takes no flags.
_UNDEFINE_FALLBACKS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
    0,
)


def backoff_delays(initial: float, cap: float) -> Iterator[float]:
    """Capped exponential back-off: initial, 2*initial, 4*initial, ..., cap, cap, ..."""
    delay = initial
    while True:
        yield delay
        delay = min(delay * 2, cap)


class LibvirtHypervisor:
    """A `base.Hypervisor` backed by libvirt at `uri` (qemu:///system, qemu+tcp://..., test:///default).

    Use as `async with LibvirtHypervisor(uri) as hypervisor:` or call `connect()`/`close()`.
    """

    def __init__(
        self,
        uri: str,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        keepalive_interval: int = 5,
        keepalive_count: int = 3,
        threads: int = 8,
    ) -> None:
        self._uri = uri
        self._backoff = (backoff_initial, backoff_max)
        self._keepalive = (keepalive_interval, keepalive_count)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="libvirt-calls"
        )
        self._conn: libvirt.virConnect | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._lost_reason = ""
        self._events = events.Broadcaster()
        self._stop_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._closed = False

    @property
    def uri(self) -> str:
        return self._uri

    async def __aenter__(self) -> LibvirtHypervisor:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- connection ---

    async def connect(self) -> None:
        if self._closed:
            raise base.PermanentError(f"driver for {self._uri} is closed")
        if self._supervisor is None:
            self._loop = asyncio.get_running_loop()
            await self._in_thread(ensure_event_loop)
            self._supervisor = asyncio.create_task(
                self._supervise(), name=f"libvirt-connection {self._uri}"
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
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._conn is not None:
            await self._in_thread(self._close_connection, self._conn)
            self._conn = None
        self._connected.clear()
        self._events.end()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _supervise(self) -> None:
        delays = backoff_delays(*self._backoff)
        while True:
            try:
                conn = await self._in_thread(self._open)
            except libvirt.libvirtError as error:
                delay = next(delays)
                log.warning(
                    "connecting to %s failed, retrying in %.1fs: %s", self._uri, delay, error
                )
                await asyncio.sleep(delay)
                continue
            delays = backoff_delays(*self._backoff)
            self._conn = conn
            self._lost.clear()
            self._connected.set()
            log.info("connected to %s", self._uri)
            self._publish(base.ConnectionEvent(self._uri, connected=True))
            await self._lost.wait()
            self._connected.clear()
            self._conn = None
            log.warning("lost connection to %s: %s", self._uri, self._lost_reason)
            self._publish(base.ConnectionEvent(self._uri, False, self._lost_reason))
            await self._in_thread(self._close_connection, conn)

    def _open(self) -> libvirt.virConnect:
        conn = libvirt.open(self._uri)
        # Keepalive and close callbacks exist only for remote connections; a local driver
        # (test:///) refuses them and cannot drop anyway.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(*self._keepalive)
        with contextlib.suppress(libvirt.libvirtError):
            conn.registerCloseCallback(self._on_close, None)
        conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
        )
        return conn

    @staticmethod
    def _close_connection(conn: libvirt.virConnect) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):
            conn.domainEventDeregisterAny(libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE)
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    def _mark_lost(self, conn: libvirt.virConnect, reason: str) -> None:
        if conn is self._conn and not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()

    # --- callbacks from libvirt's event loop thread ---

    def _on_close(self, conn: libvirt.virConnect, reason: int, _opaque: object) -> None:
        names = {
            libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
            libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file",
            libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
            libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by client",
        }
        self._to_loop(self._mark_lost, conn, names.get(reason, f"reason {reason}"))

    def _on_lifecycle(
        self,
        _conn: libvirt.virConnect,
        domain: libvirt.virDomain,
        event: int,
        detail: int,
        _opaque: object,
    ) -> None:
        # name() and UUIDString() read the handle's cached fields: no RPC in this thread.
        self._to_loop(
            self._publish, domain_event(domain.UUIDString(), domain.name(), event, detail)
        )

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(callback, *args)

    def _publish(self, event: base.Event) -> None:
        self._events.publish(event)
        if isinstance(event, base.DomainEvent) and event.kind is base.EventKind.STOPPED:
            for waiter in self._stop_waiters.pop(event.uuid, []):
                if not waiter.done():
                    waiter.set_result(None)

    # --- calls ---

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def _call(self, doing: str, fn: Callable[[libvirt.virConnect], T]) -> T:
        conn = self._conn
        if conn is None:
            raise base.RetryableError(f"{doing}: not connected to {self._uri}", delay=2.0)
        try:
            return await self._in_thread(fn, conn)
        except libvirt.libvirtError as error:
            if error.get_error_code() in _CONNECTION_ERRORS and not await self._in_thread(
                _is_alive, conn
            ):
                self._mark_lost(conn, str(error))
            raise translate_error(error, doing=doing) from error

    async def _domain_call(self, doing: str, uuid: str, fn: Callable[[libvirt.virDomain], T]) -> T:
        return await self._call(f"{doing} {uuid}", lambda conn: fn(conn.lookupByUUIDString(uuid)))

    # --- base.Hypervisor ---

    async def host_facts(self) -> base.HostFacts:
        return await self._call("reading host facts", self._host_facts)

    def _host_facts(self, conn: libvirt.virConnect) -> base.HostFacts:
        capabilities = conn.getCapabilities()
        cells = [c.get("id", "0") for c in ET.fromstring(capabilities).iterfind(".//cells/cell")]
        sizes = sorted(
            {int(p.get("size", "0")) for p in ET.fromstring(capabilities).iterfind(".//cell/pages")}
        )
        free_memory: dict[int, int] = {}
        free_pages: dict[int, dict[int, int]] = {}
        # Not every driver can say what is free; HostFacts then carries None.
        with contextlib.suppress(libvirt.libvirtError):
            free_memory = dict(enumerate(conn.getCellsFreeMemory(0, len(cells))))
        if sizes and cells:
            with contextlib.suppress(libvirt.libvirtError):
                free_pages = conn.getFreePages(sizes, 0, len(cells)) or {}
        facts = host_facts_from(
            capabilities,
            uri=self._uri,
            hostname=conn.getHostname(),
            info=conn.getInfo(),
            hypervisor_type=conn.getType(),
            hypervisor_version=conn.getVersion(),
            libvirt_version=conn.getLibVersion(),
            free_memory=free_memory,
            free_pages=free_pages,
        )
        models: dict[str, tuple[str, ...]] = {}
        for kind in facts.domain_types:
            # The test driver has no domain capabilities, and a host may offer "kvm" in
            # its capabilities without being able to describe it; that type is left out.
            with contextlib.suppress(libvirt.libvirtError):
                models[kind] = usable_cpu_models_from(
                    conn.getDomainCapabilities(None, facts.arch, None, kind, 0)
                )
        return dataclasses.replace(facts, usable_cpu_models=models)

    async def pci_devices(self) -> list[base.PciDeviceInfo]:
        return await self._call("listing PCI devices", _pci_devices)

    async def define(self, xml: str) -> base.DomainInfo:
        return await self._call("defining a domain", lambda conn: _info(conn.defineXML(xml)))

    async def start(self, uuid: str) -> None:
        await self._domain_call("starting", uuid, _start)

    async def destroy(self, uuid: str) -> None:
        await self._domain_call("destroying", uuid, _destroy)

    async def suspend(self, uuid: str) -> None:
        await self._domain_call("suspending", uuid, _suspend)

    async def resume(self, uuid: str) -> None:
        await self._domain_call("resuming", uuid, _resume)

    async def shutdown(self, uuid: str, *, timeout: float) -> base.ShutdownOutcome:
        # Watch for the STOPPED event before asking, so it cannot slip past us.
        stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop_waiters.setdefault(uuid, []).append(stopped)
        try:
            asked = await self._domain_call("shutting down", uuid, _ask_shutdown)
            if not asked:
                return base.ShutdownOutcome.ALREADY_OFF
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped, timeout)
                return base.ShutdownOutcome.GRACEFUL
            if (await self.state(uuid)).state is base.DomainState.SHUTOFF:
                return base.ShutdownOutcome.GRACEFUL
            await self.destroy(uuid)
            return base.ShutdownOutcome.FORCED
        finally:
            waiters = self._stop_waiters.get(uuid, [])
            if stopped in waiters:
                waiters.remove(stopped)
            if not waiters:
                self._stop_waiters.pop(uuid, None)

    async def undefine(self, uuid: str) -> None:
        with contextlib.suppress(base.DomainNotFound):
            await self._domain_call("undefining", uuid, _undefine)

    async def state(self, uuid: str) -> base.DomainInfo:
        return await self._domain_call("reading the state of", uuid, _info)

    async def list_domains(self) -> list[base.DomainInfo]:
        return await self._call("listing domains", _list)

    async def domain_xml(self, uuid: str) -> str:
        return await self._domain_call("reading the XML of", uuid, lambda d: str(d.XMLDesc(0)))

    def events(self) -> AsyncIterator[base.Event]:
        return self._events.subscribe()

    # --- live migration ---

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
        flags = migrate_flags(
            auto_converge=auto_converge,
            post_copy=post_copy,
            copy_storage=bool(copy_disks),
            declared_shared=shared_disks,
        )
        params = migrate_params(
            xml=xml,
            bandwidth_mibps=bandwidth_mibps,
            migrate_uri=migrate_uri,
            copy_disks=copy_disks,
        )
        transfer = asyncio.ensure_future(
            self._call(
                f"migrating {uuid} to {dest_uri}",
                lambda _shared: _migrate(
                    self._uri, uuid, dest_uri, params, flags, keepalive=self._keepalive
                ),
            )
        )
        try:
            if max_downtime_ms is not None:
                await self._set_downtime_once_running(uuid, max_downtime_ms, transfer)
            # Shielded: cancelling us must not just forget the thread that keeps migrating.
            await asyncio.shield(transfer)
        except base.HypervisorError as error:
            if error.code == libvirt.VIR_ERR_OPERATION_ABORTED:
                raise base.MigrationAborted(str(error), code=error.code) from error
            raise
        finally:
            # Cancelled, or the downtime could not be set: abort the job rather than leave a
            # migration nobody watches. Until libvirt has started the job, abort finds
            # nothing to abort, hence the loop.
            while not transfer.done():
                with contextlib.suppress(base.HypervisorError):
                    await self.abort_job(uuid)
                await asyncio.wait({transfer}, timeout=_DOWNTIME_POLL * 4)
            with contextlib.suppress(base.HypervisorError):
                transfer.result()

    async def _set_downtime_once_running(
        self, uuid: str, ms: int, transfer: asyncio.Future[None]
    ) -> None:
        """libvirt 9 has no migration parameter for the downtime, and older releases refuse
        migrateSetMaxDowntime before the job exists, so wait for the job, then set it."""
        while not transfer.done():
            if await self._domain_call("reading the job of", uuid, _has_job):
                try:
                    await self.set_max_downtime(uuid, ms)
                except base.HypervisorError:
                    if not transfer.done():
                        raise
                return
            await asyncio.sleep(_DOWNTIME_POLL)

    async def job_stats(self, uuid: str) -> JobStats | None:
        return await self._domain_call("reading the job statistics of", uuid, _job_stats)

    async def abort_job(self, uuid: str) -> None:
        await self._domain_call("aborting the job of", uuid, _abort_job)

    async def start_post_copy(self, uuid: str) -> None:
        await self._domain_call("starting post-copy for", uuid, _start_post_copy)

    async def set_max_downtime(self, uuid: str, ms: int) -> None:
        await self._domain_call(
            "setting the migration downtime of", uuid, lambda d: d.migrateSetMaxDowntime(ms, 0)
        )

    async def set_bandwidth(self, uuid: str, mibps: int) -> None:
        speed = mibps or UNLIMITED_MIBPS
        await self._domain_call(
            "setting the migration bandwidth of", uuid, lambda d: d.migrateSetMaxSpeed(speed, 0)
        )


# --- blocking helpers, run on the driver's threads -----------------------------------------


def _pci_devices(conn: libvirt.virConnect) -> list[base.PciDeviceInfo]:
    found = []
    for device in conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV):
        info = pci_device_from(device.XMLDesc(0))
        if info is not None:
            found.append(info)
    return sorted(found, key=lambda d: d.address)


def _is_alive(conn: libvirt.virConnect) -> bool:
    try:
        alive: int = conn.isAlive()
    except libvirt.libvirtError:
        return False
    return alive == 1


def _info(domain: libvirt.virDomain) -> base.DomainInfo:
    state, reason = domain.state()
    named, reason_name = domain_state(state, reason)
    return base.DomainInfo(
        uuid=domain.UUIDString(),
        name=domain.name(),
        state=named,
        reason=reason_name,
        persistent=bool(domain.isPersistent()),
    )


def _list(conn: libvirt.virConnect) -> list[base.DomainInfo]:
    infos = []
    for domain in conn.listAllDomains(0):
        try:
            infos.append(_info(domain))
        except libvirt.libvirtError as error:
            if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:  # gone since listed
                raise
    return infos


def _idempotent(
    domain: libvirt.virDomain, act: Callable[[], object], done: Callable[[int], bool]
) -> None:
    """Run `act` unless the domain's state already satisfies `done`, tolerating a race to it."""
    if done(domain.state()[0]):
        return
    try:
        act()
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and done(domain.state()[0]):
            return
        raise


def _start(domain: libvirt.virDomain) -> None:
    _idempotent(domain, domain.create, lambda s: s != libvirt.VIR_DOMAIN_SHUTOFF)


def _destroy(domain: libvirt.virDomain) -> None:
    _idempotent(domain, domain.destroy, lambda s: s == libvirt.VIR_DOMAIN_SHUTOFF)


def _suspend(domain: libvirt.virDomain) -> None:
    _idempotent(domain, domain.suspend, lambda s: s == libvirt.VIR_DOMAIN_PAUSED)


def _resume(domain: libvirt.virDomain) -> None:
    _idempotent(domain, domain.resume, lambda s: s == libvirt.VIR_DOMAIN_RUNNING)


def _ask_shutdown(domain: libvirt.virDomain) -> bool:
    """Press the power button; False if the domain was already off."""
    if domain.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF:
        return False
    try:
        domain.shutdownFlags(_shutdown_flags(domain))
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
            return bool(domain.state()[0] != libvirt.VIR_DOMAIN_SHUTOFF)
        raise
    return True


def _shutdown_flags(domain: libvirt.virDomain) -> int:
    """How to ask a domain to stop: a VM gets libvirt's default (ACPI); a container's init
    gets SIGTERM, as spec.container.init promises.

    libvirt 9.0's default for LXC writes to an initctl FIFO and, in a container without
    one, reports success and sends nothing, so the init would never hear of it.
    """
    if domain.connect().getType() == "LXC":
        return int(libvirt.VIR_DOMAIN_SHUTDOWN_SIGNAL)
    return int(libvirt.VIR_DOMAIN_SHUTDOWN_DEFAULT)


def _undefine(domain: libvirt.virDomain) -> None:
    persistent = domain.isPersistent()
    _destroy(domain)
    if not persistent:
        return  # a transient domain disappears when destroyed
    for flags in (_UNDEFINE_EVERYTHING, *_UNDEFINE_FALLBACKS):
        try:
            domain.undefineFlags(flags)
            return
        except libvirt.libvirtError as error:
            unsupported = (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT)
            if flags == 0 or error.get_error_code() not in unsupported:
                raise


# --- live migration helpers ----------------------------------------------------------------

# Always: live, source libvirtd talks to the destination's (the agent holds no connection to
# the target), the destination keeps the domain defined and the source forgets it, so the
# domain exists persistently in exactly one place once the call returns.
MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)
# libvirt's own "unlimited" (QEMU_DOMAIN_MIG_BANDWIDTH_MAX, INT64_MAX bytes/s in MiB/s);
# 0 is not unlimited to QEMU.
UNLIMITED_MIBPS = (2**63 - 1) // (1024 * 1024)
_DOWNTIME_POLL = 0.05  # s between checks for the migration job to exist (it takes ~50 ms)


def migrate_flags(
    *,
    auto_converge: bool,
    post_copy: bool,
    copy_storage: bool = False,
    declared_shared: bool = False,
) -> int:
    """The virDomainMigrateToURI3 flags for a kubevisor live migration."""
    flags: int = MIGRATE_FLAGS
    if declared_shared:
        # libvirt calls a disk it does not copy safe only on a filesystem it knows to be
        # shared (NFS, CephFS, GFS2, ... by statfs); the admin's declaration is what counts.
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    if copy_storage:
        # Only the overlay's own data: the destination has the same base images.
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
    if auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if post_copy:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    return flags


def migrate_params(
    *,
    xml: str | None,
    bandwidth_mibps: int | None,
    migrate_uri: str | None,
    copy_disks: Sequence[str] = (),
) -> dict[str, Any]:
    """The virDomainMigrateToURI3 typed parameters; the XML is both the live and the
    persistent definition on the destination (it differs only in host-specific parts)."""
    params: dict[str, Any] = {}
    if xml is not None:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = xml
        params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = xml
    if bandwidth_mibps:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth_mibps
    if migrate_uri is not None:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = migrate_uri
        # The disks' NBD stream goes to the same address as the memory stream.
        if copy_disks:
            host = migrate_uri.split("://", 1)[-1].split(":", 1)[0]
            params[libvirt.VIR_MIGRATE_PARAM_DISKS_URI] = f"tcp://{host}"
    if copy_disks:
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(copy_disks)
    return params


def job_stats_from(stats: dict[str, Any], *, post_copy: bool) -> JobStats | None:
    """virDomainGetJobStats's dictionary as JobStats; None unless a migration job runs."""
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    operation = stats.get(libvirt.VIR_DOMAIN_JOB_OPERATION)
    if operation not in (
        None,
        libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT,
        libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN,
    ):
        return None  # a save, dump or snapshot: not ours to judge

    def field(name: str) -> int:
        return int(stats.get(name, 0))

    return JobStats(
        data_total=field(libvirt.VIR_DOMAIN_JOB_DATA_TOTAL),
        data_processed=field(libvirt.VIR_DOMAIN_JOB_DATA_PROCESSED),
        data_remaining=field(libvirt.VIR_DOMAIN_JOB_DATA_REMAINING),
        memory_iteration=field(libvirt.VIR_DOMAIN_JOB_MEMORY_ITERATION),
        bandwidth_bps=field(libvirt.VIR_DOMAIN_JOB_MEMORY_BPS),
        time_elapsed_ms=field(libvirt.VIR_DOMAIN_JOB_TIME_ELAPSED),
        dirty_rate_pps=field(libvirt.VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE),
        post_copy=post_copy,
    )


def _job_stats(domain: libvirt.virDomain) -> JobStats | None:
    try:
        stats = domain.jobStats(0)
    except libvirt.libvirtError as error:
        # The source stops at the end of a migration, a moment before it is undefined: a
        # domain that does not run has no job.
        if error.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and not domain.isActive():
            return None
        raise
    state, reason = domain.state()
    # The source pauses in post-copy: the guest runs on the destination from then on.
    post_copy = state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_POSTCOPY
    return job_stats_from(stats, post_copy=post_copy)


def _migrate(
    uri: str,
    uuid: str,
    dest_uri: str,
    params: dict[str, Any],
    flags: int,
    *,
    keepalive: tuple[int, int],
) -> None:
    """Migrate on a connection of its own (see the module docstring for why)."""
    conn = libvirt.open(uri)
    try:
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(*keepalive)  # a dead source daemon fails the call, not hangs it
        conn.lookupByUUIDString(uuid).migrateToURI3(dest_uri, params, flags)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def _has_job(domain: libvirt.virDomain) -> bool:
    return bool(domain.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE)


def _abort_job(domain: libvirt.virDomain) -> None:
    try:
        domain.abortJob()
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
            raise
        if not _has_job(domain):
            return  # nothing runs (any more): what an abort wants
        # libvirt refuses to abort a migration in post-copy: the guest runs on the target.
        raise base.PermanentError(
            f"aborting the job of {domain.UUIDString()}: {error.get_error_message()}",
            code=error.get_error_code(),
        ) from error


def _start_post_copy(domain: libvirt.virDomain) -> None:
    try:
        domain.migrateStartPostCopy(0)
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
            raise
        # No outgoing migration, or one started without VIR_MIGRATE_POSTCOPY: asking again
        # cannot help this job.
        raise base.PermanentError(
            f"switching {domain.UUIDString()} to post-copy: {error.get_error_message()}",
            code=error.get_error_code(),
        ) from error


def _conforms(driver: LibvirtHypervisor) -> base.Hypervisor:
    """mypy checks here that LibvirtHypervisor satisfies the Hypervisor Protocol."""
    return driver
