"""An in-memory `base.Hypervisor` for the agent's unit tests.

Tests construct a `FakeHypervisor`, hand it to the code under test instead of a
`LibvirtHypervisor`, and then inspect `domains`, `calls` and the events it emitted. Domains
follow the `TRANSITIONS` table (the same states, reasons and events libvirt reports), and
tests can make the next calls fail (`fail_next`), make a guest ignore the power button
(`ignore_acpi`), or simulate losing and regaining the hypervisor (`disconnect`/`reconnect`).

Fakes that share a `network` dict (URI -> fake) can live-migrate to each other. A migration
advances in ticks of 100 ms of fake time, one per turn of the event loop (plus
`migration_tick` real seconds), moving bandwidth x 0.1 s bytes of the domain's memory per
tick (`FAST_MIBPS` when unlimited), so its `job_stats` progress deterministically while
other tasks poll, abort or switch it to post-copy. Tests steer a migration in flight through
`migrations[uuid]` (e.g. `stalled = True`, `dirty_bytes_per_tick`).

What `domain_stats` reports for a domain is its `usage`, which tests set;
`domain_diagnostics` reports its state as its domstats and, like a driver without logs,
says it has no QEMU log unless a test sets the domain's `qemu_log`.

A running domain has a serial console (`open_console`, one session at a time, like
libvirt's): tests make the guest write with `consoles[uuid].guest_writes(...)` and read
what the session typed in `consoles[uuid].typed`; it hangs up when the domain stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

from kubevisor.core.migration import JobStats
from kubevisor.drivers import base, events

S = base.DomainState
E = base.EventKind

# (operation, state before) -> (state after, state reason, event kind, event detail).
# A pair not listed is an illegal transition (libvirt's "operation invalid"), except the
# no-ops listed in NO_OPS, which leave the domain alone like the real driver does.
TRANSITIONS: dict[tuple[str, S], tuple[S, str, E, str]] = {
    ("start", S.SHUTOFF): (S.RUNNING, "booted", E.STARTED, "booted"),
    ("suspend", S.RUNNING): (S.PAUSED, "user", E.SUSPENDED, "paused"),
    ("resume", S.PAUSED): (S.RUNNING, "unpaused", E.RESUMED, "unpaused"),
    ("shutdown", S.RUNNING): (S.SHUTOFF, "shutdown", E.STOPPED, "shutdown"),
    ("destroy", S.RUNNING): (S.SHUTOFF, "destroyed", E.STOPPED, "destroyed"),
    ("destroy", S.PAUSED): (S.SHUTOFF, "destroyed", E.STOPPED, "destroyed"),
}
NO_OPS: frozenset[tuple[str, S]] = frozenset(
    {
        ("start", S.RUNNING),
        ("start", S.PAUSED),
        ("suspend", S.PAUSED),
        ("resume", S.RUNNING),
        ("destroy", S.SHUTOFF),
    }
)


MIB = 1024 * 1024
TICK_MS = 100  # fake time per migration tick
FAST_MIBPS = 1024  # what "unlimited" bandwidth moves in the fake
DEFAULT_MAX_DOWNTIME_MS = 300  # QEMU's default downtime-limit
# The lifecycle events of a completed migration as "kind/detail", on each side, in order:
# what libvirt 9.0 sends (tests/drivers/test_migration_qemu.py checks it still does).
MIGRATION_SOURCE_EVENTS = ("suspended/migrated", "stopped/migrated")
MIGRATION_TARGET_EVENTS = ("started/migrated", "defined/added", "resumed/migrated")


# Some of the named CPU models QEMU 7.2 under TCG marks usable (libvirt's domain
# capabilities for virttype qemu on our machines); what the fake reports by default.
TCG_CPU_MODELS = ("Nehalem", "Penryn", "Westmere", "core2duo", "qemu32", "qemu64")


def default_host_facts(uri: str = "fake:///") -> base.HostFacts:
    """Two cells of 4 single-threaded CPUs and 4 GiB each, like a small test:///default,
    running "qemu" (TCG) domains that can use the `TCG_CPU_MODELS`.

    Tests wanting other facts (say, other usable CPU models) pass their own to
    `FakeHypervisor(facts=dataclasses.replace(default_host_facts(), ...))`.
    """

    def cell(index: int) -> base.NumaCell:
        cpus = tuple(
            base.HostCpu(id=i, socket_id=index, core_id=i % 4, siblings=(i,))
            for i in range(index * 4, index * 4 + 4)
        )
        pages = (
            base.PageSize(size_kib=4, total=1048576, free=1048576),
            base.PageSize(size_kib=2048, total=0, free=0),
        )
        return base.NumaCell(index, 4194304, 4194304, cpus, pages, ((0, 10), (1, 20)))

    return base.HostFacts(
        hostname="fake-host",
        uuid="00000000-0000-4000-8000-000000000001",
        arch="x86_64",
        cpus=8,
        memory_kib=2 * 4194304,
        cpu_model="qemu64",
        cpu_vendor="AMD",
        cpu_features=("sse2",),
        cells=(cell(0), cell(1)),
        hypervisor_type="QEMU",
        hypervisor_version="7.2.0",
        libvirt_version="9.0.0",
        domain_types=("qemu",),
        uri=uri,
        usable_cpu_models={"qemu": TCG_CPU_MODELS},
    )


@dataclasses.dataclass
class FakeDomain:
    """A domain of the fake; tests may read and change it directly."""

    uuid: str
    name: str
    xml: str
    state: S = S.SHUTOFF
    reason: str = "unknown"
    persistent: bool = True
    ignore_acpi: bool = False  # the guest does not power off when asked
    max_downtime_ms: int = DEFAULT_MAX_DOWNTIME_MS  # QEMU's migration downtime-limit
    # What `domain_stats` reports for it (its uuid, name and state are filled in); None
    # reports nothing but those, like libvirt's test driver.
    usage: base.DomainStats | None = None
    qemu_log: str | None = None

    def info(self) -> base.DomainInfo:
        return base.DomainInfo(self.uuid, self.name, self.state, self.reason, self.persistent)


@dataclasses.dataclass
class FakeMigration:
    """An outgoing migration of the fake; tests may read and steer it while it runs."""

    uuid: str
    dest: FakeHypervisor
    xml: str
    total: int
    bandwidth_mibps: int  # 0: unlimited (FAST_MIBPS)
    post_copy_allowed: bool
    auto_converge: bool
    processed: int = 0
    remaining: int = 0
    elapsed_ms: int = 0
    stalled: bool = False  # no byte moves, as with a dead network (for stall judging)
    dirty_bytes_per_tick: int = 0  # the guest re-dirties this much per tick (convergence)
    post_copy: bool = False
    aborted: bool = False

    def stats(self) -> JobStats:
        return JobStats(
            data_total=self.total,
            data_processed=self.processed,
            data_remaining=self.remaining,
            memory_iteration=1 + self.processed // max(self.total, 1),
            bandwidth_bps=0 if self.stalled else self.speed_mibps() * MIB,
            time_elapsed_ms=self.elapsed_ms,
            dirty_rate_pps=self.dirty_bytes_per_tick * 1000 // TICK_MS // 4096,
            post_copy=self.post_copy,
        )

    def speed_mibps(self) -> int:
        return self.bandwidth_mibps or FAST_MIBPS

    def tick(self) -> None:
        self.elapsed_ms += TICK_MS
        if self.stalled:
            return
        sent = min(self.remaining, self.speed_mibps() * MIB * TICK_MS // 1000)
        self.processed += sent
        self.remaining -= sent
        if self.remaining:
            self.remaining = min(self.total, self.remaining + self.dirty_bytes_per_tick)


class FakeConsole:
    """One session on a fake domain's serial console (a `base.Console`)."""

    def __init__(self) -> None:
        self._output = base.ConsoleOutput()
        self.typed = bytearray()
        """What the session wrote to the guest."""
        self.ended = False

    def guest_writes(self, data: bytes) -> None:
        """The guest prints `data`: the session reads it."""
        self._output.put(data)

    def hang_up(self) -> None:
        """The stream ends (the domain stopped, or another session took over)."""
        if not self.ended:
            self.ended = True
            self._output.end()

    async def read(self) -> bytes:
        return await self._output.read()

    async def write(self, data: bytes) -> None:
        if self.ended:
            raise ConnectionError("the console stream has ended")
        self.typed += data

    async def close(self) -> None:
        self.hang_up()


class FakeHypervisor:
    """In-memory hypervisor; see the module docstring."""

    def __init__(
        self,
        *,
        uri: str = "fake:///",
        facts: base.HostFacts | None = None,
        network: dict[str, FakeHypervisor] | None = None,
        migration_tick: float = 0.0,
    ) -> None:
        self._uri = uri
        self.facts = facts or default_host_facts(uri)
        self.network = network if network is not None else {}
        self.network[uri] = self
        self.migration_tick = migration_tick
        self.migrations: dict[str, FakeMigration] = {}  # outgoing, by domain UUID
        self.pci: list[base.PciDeviceInfo] = []  # what pci_devices() reports
        self.domains: dict[str, FakeDomain] = {}
        self.consoles: dict[str, FakeConsole] = {}  # the latest session, by domain UUID
        self.calls: list[tuple[str, str]] = []  # (operation, uuid or "")
        self.connected = False
        self._failures: dict[str, list[base.HypervisorError]] = {}
        self._events = events.Broadcaster()

    @property
    def uri(self) -> str:
        return self._uri

    # --- test controls ---

    def fail_next(self, operation: str, error: base.HypervisorError, *, times: int = 1) -> None:
        """Make the next `times` calls of `operation` (e.g. "start") raise `error`."""
        self._failures.setdefault(operation, []).extend([error] * times)

    def disconnect(self, reason: str = "end of file") -> None:
        self.connected = False
        self._events.publish(base.ConnectionEvent(self._uri, False, reason))

    def reconnect(self) -> None:
        self.connected = True
        self._events.publish(base.ConnectionEvent(self._uri, True))

    def emit(self, event: base.Event) -> None:
        """Deliver an arbitrary event, e.g. a crash the fake would never produce itself."""
        self._events.publish(event)

    # --- base.Hypervisor ---

    async def connect(self) -> None:
        if not self.connected:
            self.reconnect()

    async def close(self) -> None:
        self.connected = False
        self._events.end()

    async def host_facts(self) -> base.HostFacts:
        self._enter("host_facts", "")
        return self.facts

    async def pci_devices(self) -> list[base.PciDeviceInfo]:
        self._enter("pci_devices", "")
        return sorted(self.pci, key=lambda d: d.address)

    async def define(self, xml: str) -> base.DomainInfo:
        root = self._parse(xml)
        uuid = (root.findtext("uuid") or str(uuidlib.uuid4())).lower()
        self._enter("define", uuid)
        name = root.findtext("name") or ""
        for other in self.domains.values():
            if other.name == name and other.uuid != uuid:
                raise base.RetryableError(f"domain '{name}' already exists with uuid {other.uuid}")
        existing = self.domains.get(uuid)
        if existing is None:
            self.domains[uuid] = FakeDomain(uuid=uuid, name=name, xml=xml)
            detail = "added"
        else:
            existing.xml, existing.name, existing.persistent = xml, name, True
            detail = "updated"
        self._events.publish(base.DomainEvent(uuid, name, E.DEFINED, detail))
        return self.domains[uuid].info()

    async def start(self, uuid: str, *, paused: bool = False) -> None:
        domain = self._domain("start", uuid)
        off = domain.state is S.SHUTOFF
        self._transition("start", domain)
        if paused and off:
            self._transition("suspend", domain)

    async def suspend(self, uuid: str) -> None:
        self._transition("suspend", self._domain("suspend", uuid))

    async def resume(self, uuid: str) -> None:
        self._transition("resume", self._domain("resume", uuid))

    async def destroy(self, uuid: str) -> None:
        self._transition("destroy", self._domain("destroy", uuid))

    async def shutdown(self, uuid: str, *, timeout: float) -> base.ShutdownOutcome:
        domain = self._domain("shutdown", uuid)
        if domain.state is S.SHUTOFF:
            return base.ShutdownOutcome.ALREADY_OFF
        # A paused guest cannot react to the power button: the timeout passes, then destroy.
        if domain.ignore_acpi or domain.state is S.PAUSED:
            self._transition("destroy", domain)
            return base.ShutdownOutcome.FORCED
        self._transition("shutdown", domain)
        return base.ShutdownOutcome.GRACEFUL

    async def undefine(self, uuid: str) -> None:
        self._enter("undefine", uuid)
        domain = self.domains.get(uuid)
        if domain is None:
            return
        self._transition("destroy", domain)
        del self.domains[uuid]
        self._events.publish(base.DomainEvent(uuid, domain.name, E.UNDEFINED, "removed"))

    async def state(self, uuid: str) -> base.DomainInfo:
        return self._domain("state", uuid).info()

    async def list_domains(self) -> list[base.DomainInfo]:
        self._enter("list_domains", "")
        return [domain.info() for domain in self.domains.values()]

    async def domain_xml(self, uuid: str) -> str:
        return self._domain("domain_xml", uuid).xml

    async def domain_stats(self) -> list[base.DomainStats]:
        self._enter("domain_stats", "")
        return [
            dataclasses.replace(
                domain.usage or base.DomainStats(uuid="", name="", state=domain.state),
                uuid=domain.uuid,
                name=domain.name,
                state=domain.state,
            )
            for domain in self.domains.values()
        ]

    async def domain_diagnostics(self, uuid: str, *, lines: int) -> base.DomainDiagnostics:
        domain = self._domain("domain_diagnostics", uuid)
        log = domain.qemu_log
        return base.DomainDiagnostics(
            domstats=f"state.state={domain.state.value}\nstate.reason={domain.reason}\n",
            qemu_log=None if log is None else "".join(log.splitlines(True)[-lines:]),
            missing={} if log is not None else {"qemu.log": "the fake driver keeps no QEMU log"},
        )

    def events(self) -> AsyncIterator[base.Event]:
        return self._events.subscribe()

    async def open_console(self, uuid: str, *, force: bool = False) -> base.Console:
        domain = self._domain("open_console", uuid)
        if domain.state not in (S.RUNNING, S.PAUSED):
            raise base.ConsoleBusy("the VM is not running")
        current = self.consoles.get(uuid)
        if current is not None and not current.ended:
            if not force:
                raise base.ConsoleBusy(
                    "the console is in use by another session (operation failed: Active "
                    "console session exists for this domain)"
                )
            current.hang_up()
        session = self.consoles[uuid] = FakeConsole()
        return session

    async def open_display(self, uuid: str) -> base.Console:
        self._domain("open_display", uuid)
        raise base.ConsoleUnsupported("the fake driver has no displays")

    async def screenshot(self, uuid: str) -> bytes:
        self._domain("screenshot", uuid)
        raise base.ConsoleUnsupported("the fake driver has no displays")

    # --- live migration ---

    async def migrate(self, uuid: str, request: base.MigrationRequest) -> None:
        # `migrate_uri` names a network address; the fake has no network to address.
        domain = self._domain("migrate", uuid)
        dest_uri, xml = request.dest_uri, request.xml
        doing = f"migrating {uuid} to {dest_uri}"
        dest = self.network.get(dest_uri)
        if dest is None or not dest.connected:
            raise base.RetryableError(f"{doing}: unable to connect to {dest_uri}", delay=2.0)
        if domain.state not in (S.RUNNING, S.PAUSED):
            raise base.RetryableError(f"{doing}: domain is not running", delay=1.0)
        if uuid in self.migrations:
            raise base.RetryableError(f"{doing}: a migration job is already running", delay=1.0)
        if uuid in dest.domains and dest.domains[uuid].state is not S.SHUTOFF:
            raise base.RetryableError(f"{doing}: domain already exists on {dest_uri}")
        target_xml = domain.xml if xml is None else xml
        root = self._parse(target_xml)
        if (root.findtext("uuid") or uuid).lower() != uuid:
            raise base.PermanentError(f"{doing}: the destination XML names another domain")
        if request.max_downtime_ms is not None:
            domain.max_downtime_ms = request.max_downtime_ms
        total = _memory_bytes(root)
        migration = FakeMigration(
            uuid=uuid,
            dest=dest,
            xml=target_xml,
            total=total,
            remaining=total,
            bandwidth_mibps=request.bandwidth_mibps or 0,
            post_copy_allowed=request.post_copy,
            auto_converge=request.auto_converge,
        )
        self.migrations[uuid] = migration
        try:
            while migration.remaining and not migration.post_copy:
                await asyncio.sleep(self.migration_tick)
                if migration.aborted:
                    raise base.MigrationAborted(
                        f"{doing}: operation aborted: job 'migration out' canceled by client"
                    )
                migration.tick()
        finally:
            del self.migrations[uuid]
        # Like libvirt: the source pauses for the switch-over, stops, and forgets the domain;
        # the destination starts it, defines it (PERSIST_DEST) and resumes it.
        # libvirt 9.0 sends no "undefined" for UNDEFINE_SOURCE: the domain is just gone.
        del self.domains[uuid]
        if uuid in self.consoles:
            self.consoles.pop(uuid).hang_up()
        for kind, detail in _events(MIGRATION_SOURCE_EVENTS):
            self._events.publish(base.DomainEvent(uuid, domain.name, kind, detail))
        name = root.findtext("name") or domain.name
        # Once post-copy completes too, libvirt reports the target running as "migrated".
        dest.domains[uuid] = FakeDomain(uuid, name, target_xml, S.RUNNING, "migrated")
        for kind, detail in _events(MIGRATION_TARGET_EVENTS):
            dest.emit(base.DomainEvent(uuid, name, kind, detail))

    async def job_stats(self, uuid: str) -> JobStats | None:
        self._domain("job_stats", uuid)
        migration = self.migrations.get(uuid)
        return None if migration is None else migration.stats()

    async def abort_job(self, uuid: str) -> None:
        self._domain("abort_job", uuid)
        migration = self.migrations.get(uuid)
        if migration is None:
            return
        if migration.post_copy:
            raise base.PermanentError(
                f"aborting the job of {uuid}: cannot abort migration in post-copy mode"
            )
        migration.aborted = True

    async def start_post_copy(self, uuid: str) -> None:
        domain = self._domain("start_post_copy", uuid)
        migration = self.migrations.get(uuid)
        doing = f"switching {uuid} to post-copy"
        if migration is None:
            raise base.PermanentError(
                f"{doing}: post-copy can only be started while outgoing migration is in progress"
            )
        if not migration.post_copy_allowed:
            raise base.PermanentError(
                f"{doing}: switching to post-copy requires migration to be started with "
                "VIR_MIGRATE_POSTCOPY flag"
            )
        if not migration.post_copy:
            migration.post_copy = True
            domain.state, domain.reason = S.PAUSED, "postcopy"
            self._events.publish(base.DomainEvent(uuid, domain.name, E.SUSPENDED, "postcopy"))

    async def set_max_downtime(self, uuid: str, ms: int) -> None:
        domain = self._domain("set_max_downtime", uuid)
        self._require_active(domain, "setting the migration downtime of")
        domain.max_downtime_ms = ms

    async def set_bandwidth(self, uuid: str, mibps: int) -> None:
        domain = self._domain("set_bandwidth", uuid)
        self._require_active(domain, "setting the migration bandwidth of")
        if (migration := self.migrations.get(uuid)) is not None:
            migration.bandwidth_mibps = mibps

    # --- internals ---

    @staticmethod
    def _require_active(domain: FakeDomain, doing: str) -> None:
        if domain.state is S.SHUTOFF:
            raise base.RetryableError(f"{doing} {domain.uuid}: domain is not running", delay=1.0)

    def _enter(self, operation: str, uuid: str) -> None:
        self.calls.append((operation, uuid))
        if not self.connected:
            raise base.RetryableError(f"{operation}: not connected to {self._uri}", delay=2.0)
        pending = self._failures.get(operation)
        if pending:
            raise pending.pop(0)

    def _domain(self, operation: str, uuid: str) -> FakeDomain:
        self._enter(operation, uuid)
        domain = self.domains.get(uuid)
        if domain is None:
            raise base.DomainNotFound(f"{operation} {uuid}: no domain with matching uuid")
        return domain

    def _transition(self, operation: str, domain: FakeDomain) -> None:
        if (operation, domain.state) in NO_OPS:
            return
        step = TRANSITIONS.get((operation, domain.state))
        if step is None:
            raise base.RetryableError(
                f"{operation} {domain.uuid}: operation invalid in state {domain.state.value}",
                delay=1.0,
            )
        domain.state, domain.reason, kind, detail = step
        if domain.state is S.SHUTOFF and domain.uuid in self.consoles:
            self.consoles.pop(domain.uuid).hang_up()
        self._events.publish(base.DomainEvent(domain.uuid, domain.name, kind, detail))

    @staticmethod
    def _parse(xml: str) -> ET.Element:
        try:
            return ET.fromstring(xml)
        except ET.ParseError as error:
            raise base.PermanentError(f"defining a domain: invalid XML: {error}") from error


def _events(names: tuple[str, ...]) -> list[tuple[base.EventKind, str]]:
    return [(base.EventKind(kind), detail) for kind, _, detail in (n.partition("/") for n in names)]


def _memory_bytes(root: ET.Element) -> int:
    """<memory> of a domain XML in bytes (64 MiB when absent, like the contract tests')."""
    memory = root.find("memory")
    if memory is None or not (memory.text or "").strip():
        return 64 * MIB
    # An unknown unit is read as KiB.
    return int(memory.text or 0) * (base.memory_unit_bytes(memory.get("unit")) or 1024)


def _conforms(driver: FakeHypervisor) -> base.Hypervisor:
    """mypy checks here that FakeHypervisor satisfies the Hypervisor Protocol."""
    return driver
