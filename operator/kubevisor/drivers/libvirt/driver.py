"""`LibvirtHypervisor`: one libvirt URI as a `base.Hypervisor`, held by the node agent.

Each call runs on the connection's thread pool (`connection.Connection`), so the agent's
event loop never blocks; a live migration occupies one of those threads for its whole
transfer, on a connection of its own (`migration`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import libvirt

from kubevisor.core.migration import JobStats
from kubevisor.drivers import base, events
from kubevisor.drivers.libvirt import (
    console,
    diagnostics,
    display,
    facts,
    migration,
    snapshot,
    stats,
)
from kubevisor.drivers.libvirt.connection import Connection
from kubevisor.drivers.snapshots import CopyOutcome, DiskCopier, DiskCopy

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


class LibvirtHypervisor(base.Connects):
    """A `base.Hypervisor` backed by libvirt at `uri` (qemu:///system, qemu+tcp://..., test:///default).

    Use as `async with LibvirtHypervisor(uri) as hypervisor:` or call `connect()`/`close()`.
    With `migration_tls` (the directory of the certificates libvirtd's qemu.conf names as
    migrate_tls_x509_cert_dir), every live migration is encrypted, and refused while that
    directory lacks a valid certificate or key; None migrates over plain TCP. `log_dir`
    is where libvirtd writes its domains' QEMU logs (`diagnostics.default_log_dir`).
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
        migration_tls: Path | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self._uri = uri
        self._log_dir = log_dir
        self._migration_tls = migration_tls
        self._events = events.Broadcaster()
        self._stop_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._connection = Connection(
            uri,
            events=self._events,
            on_lifecycle=self._publish,
            backoff=(backoff_initial, backoff_max),
            keepalive=(keepalive_interval, keepalive_count),
            threads=threads,
        )
        self._call = self._connection.call
        self._domain_call = self._connection.domain_call

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def migration_tls(self) -> Path | None:
        """The certificate directory migrations are encrypted with; None: plain TCP."""
        return self._migration_tls

    async def connect(self) -> None:
        await self._connection.connect()

    async def close(self) -> None:
        await self._connection.close()

    def _publish(self, event: base.DomainEvent) -> None:
        self._events.publish(event)
        if event.kind is base.EventKind.STOPPED:
            for waiter in self._stop_waiters.pop(event.uuid, []):
                if not waiter.done():
                    waiter.set_result(None)

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
        found = facts.host_facts_from(
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
        for kind in found.domain_types:
            # The test driver has no domain capabilities, and a host may offer "kvm" in
            # its capabilities without being able to describe it; that type is left out.
            with contextlib.suppress(libvirt.libvirtError):
                models[kind] = facts.usable_cpu_models_from(
                    conn.getDomainCapabilities(None, found.arch, None, kind, 0)
                )
        return dataclasses.replace(found, usable_cpu_models=models)

    async def pci_devices(self) -> list[base.PciDeviceInfo]:
        return await self._call("listing PCI devices", _pci_devices)

    async def define(self, xml: str) -> base.DomainInfo:
        return await self._call("defining a domain", lambda conn: _info(conn.defineXML(xml)))

    async def start(self, uuid: str, *, paused: bool = False) -> None:
        await self._domain_call("starting", uuid, _start_paused if paused else _start)

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

    async def domain_stats(self) -> list[base.DomainStats]:
        return await self._call("reading domain statistics", _domain_stats)

    async def domain_diagnostics(self, uuid: str, *, lines: int) -> base.DomainDiagnostics:
        name, record, why = await self._domain_call(
            "reading the statistics of", uuid, diagnostics.domstats
        )
        log, why_no_log = await diagnostics.qemu_log(self._log_dir, name, lines)
        missing = {"domstats": why} if record is None else {}
        if log is None:
            missing["qemu.log"] = why_no_log
        return base.DomainDiagnostics(domstats=record, qemu_log=log, missing=missing)

    def events(self) -> AsyncIterator[base.Event]:
        return self._events.subscribe()

    async def open_console(self, uuid: str, *, force: bool = False) -> base.Console:
        return await console.SerialConsole.open(self._uri, uuid, force=force)

    async def open_display(self, uuid: str) -> base.Console:
        return await display.open_display(self._uri, uuid)

    async def screenshot(self, uuid: str) -> bytes:
        return await display.screenshot(self._uri, uuid)

    # --- live migration ---
    # --- live migration ---

    async def migrate(self, uuid: str, request: base.MigrationRequest) -> None:
        dest_uri = request.dest_uri
        if self._migration_tls is not None:
            problem = await asyncio.to_thread(migration.tls_problem, self._migration_tls)
            if problem is not None:
                raise base.PermanentError(
                    f"migrating {uuid} to {dest_uri} over TLS: {problem}; the migration was "
                    "not started"
                )
        flags = migration.migrate_flags(request, tls=self._migration_tls is not None)
        params = migration.migrate_params(request)
        transfer = asyncio.ensure_future(
            self._call(
                f"migrating {uuid} to {dest_uri}",
                lambda _shared: migration.migrate_on_own_connection(
                    self._uri, uuid, dest_uri, params, flags, keepalive=self._connection.keepalive
                ),
            )
        )
        try:
            if request.max_downtime_ms is not None:
                await self._set_downtime_once_running(uuid, request.max_downtime_ms, transfer)
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
                await asyncio.wait({transfer}, timeout=migration.DOWNTIME_POLL * 4)
            with contextlib.suppress(base.HypervisorError):
                transfer.result()

    async def _set_downtime_once_running(
        self, uuid: str, ms: int, transfer: asyncio.Future[None]
    ) -> None:
        """libvirt 9 has no migration parameter for the downtime, and older releases refuse
        migrateSetMaxDowntime before the job exists, so wait for the job, then set it."""
        while not transfer.done():
            if await self._domain_call("reading the job of", uuid, migration.has_job):
                try:
                    await self.set_max_downtime(uuid, ms)
                except base.HypervisorError:
                    if not transfer.done():
                        raise
                return
            await asyncio.sleep(migration.DOWNTIME_POLL)

    async def copy_running_disks(
        self, uuid: str, copies: Sequence[DiskCopy], *, quiesce: bool, timeout: float
    ) -> CopyOutcome:
        return await snapshot.copy_running_disks(
            self._domain_call, uuid, copies, quiesce=quiesce, timeout=timeout
        )

    async def job_stats(self, uuid: str) -> JobStats | None:
        return await self._domain_call("reading the job statistics of", uuid, migration.job_stats)

    async def abort_job(self, uuid: str) -> None:
        await self._domain_call("aborting the job of", uuid, migration.abort_job)

    async def start_post_copy(self, uuid: str) -> None:
        await self._domain_call("starting post-copy for", uuid, migration.start_post_copy)

    async def set_max_downtime(self, uuid: str, ms: int) -> None:
        await self._domain_call(
            "setting the migration downtime of", uuid, lambda d: d.migrateSetMaxDowntime(ms, 0)
        )

    async def set_bandwidth(self, uuid: str, mibps: int) -> None:
        speed = mibps or migration.UNLIMITED_MIBPS
        await self._domain_call(
            "setting the migration bandwidth of", uuid, lambda d: d.migrateSetMaxSpeed(speed, 0)
        )


# --- blocking helpers, run on the driver's threads -----------------------------------------


def _pci_devices(conn: libvirt.virConnect) -> list[base.PciDeviceInfo]:
    found = []
    for device in conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV):
        info = facts.pci_device_from(device.XMLDesc(0))
        if info is not None:
            found.append(info)
    return sorted(found, key=lambda d: d.address)


def _info(domain: libvirt.virDomain) -> base.DomainInfo:
    state, reason = domain.state()
    named, reason_name = facts.domain_state(state, reason)
    return base.DomainInfo(
        uuid=domain.UUIDString(),
        name=domain.name(),
        state=named,
        reason=reason_name,
        persistent=bool(domain.isPersistent()),
    )


def _domain_stats(conn: libvirt.virConnect) -> list[base.DomainStats]:
    # One request for every domain; a domain's name and UUID are held by its handle.
    try:
        found = conn.getAllDomainStats(stats.FLAGS, 0)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return []  # a libvirt driver without bulk statistics: no per-VM usage
        raise
    return [
        stats.domain_stats_from(domain.UUIDString(), domain.name(), record)
        for domain, record in found
    ]


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


def _start_paused(domain: libvirt.virDomain) -> None:
    _idempotent(
        domain,
        lambda: domain.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED),
        lambda s: s != libvirt.VIR_DOMAIN_SHUTOFF,
    )


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


def _conforms(driver: LibvirtHypervisor) -> base.Hypervisor:
    """mypy checks here that LibvirtHypervisor satisfies the Hypervisor Protocol."""
    return driver


def _copies_disks(driver: LibvirtHypervisor) -> DiskCopier:
    """mypy checks here that LibvirtHypervisor copies running disks (snapshots)."""
    return driver
