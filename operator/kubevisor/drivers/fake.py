"""An in-memory `base.Hypervisor` for handler and agent unit tests.

Tests construct a `FakeHypervisor`, hand it to the code under test instead of a
`LibvirtHypervisor`, and then inspect `domains`, `calls` and the events it emitted. Domains
follow the `TRANSITIONS` table (the same states, reasons and events libvirt reports), and
tests can make the next calls fail (`fail_next`), make a guest ignore the power button
(`ignore_acpi`), or simulate losing and regaining the hypervisor (`disconnect`/`reconnect`).
"""

from __future__ import annotations

import dataclasses
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

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


def default_host_facts(uri: str = "fake:///") -> base.HostFacts:
    """Two cells of 4 single-threaded CPUs and 4 GiB each, like a small test:///default."""

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

    def info(self) -> base.DomainInfo:
        return base.DomainInfo(self.uuid, self.name, self.state, self.reason, self.persistent)


class FakeHypervisor:
    """In-memory hypervisor; see the module docstring."""

    def __init__(self, *, uri: str = "fake:///", facts: base.HostFacts | None = None) -> None:
        self._uri = uri
        self.facts = facts or default_host_facts(uri)
        self.domains: dict[str, FakeDomain] = {}
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

    async def start(self, uuid: str) -> None:
        self._transition("start", self._domain("start", uuid))

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

    def events(self) -> AsyncIterator[base.Event]:
        return self._events.subscribe()

    # --- internals ---

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
        self._events.publish(base.DomainEvent(domain.uuid, domain.name, kind, detail))

    @staticmethod
    def _parse(xml: str) -> ET.Element:
        try:
            return ET.fromstring(xml)
        except ET.ParseError as error:
            raise base.PermanentError(f"defining a domain: invalid XML: {error}") from error


def _conforms(driver: FakeHypervisor) -> base.Hypervisor:
    """mypy checks here that FakeHypervisor satisfies the Hypervisor Protocol."""
    return driver
