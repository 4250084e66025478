"""`VsphereHypervisor`: one ESXi host behind a vCenter (or vcsim) as a `base.Hypervisor`.

The node agent speaks libvirt domain XML and names domains by UUID; vSphere names VMs by
managed object and keeps a per-VM `instanceUuid`. `define` reads what vSphere needs from
the XML (name, UUID, memory, vCPUs: `mapping.vm_config`), creates the VM with both its
BIOS `uuid` and its `instanceUuid` set to the domain's UUID, and keeps the whole XML in
the VM's `extraConfig` under `mapping.XML_KEY`, so `domain_xml` returns the same kubevisor
metadata `core.domain.read_metadata` parses. Devices (disks, NICs, consoles) are not
mapped yet: the VM gets the memory and CPUs it asks for, and XML asking for more
(`mapping.UNMAPPED`) is refused with a PermanentError naming it rather than run without
it.

`migrate`'s `dest_uri` names another host of the same vCenter (`vsphere://VCENTER/HOST`),
and the move is a vMotion (RelocateVM_Task).

vSphere has lifecycle events, but through its own event manager; this driver polls
instead: the connection supervisor (`drivers.supervisor`) logs in with capped
exponential back-off, the watch reads the power state of every VM on the host once per
`poll_interval` with one PropertyCollector call and publishes what changed as
`DomainEvent`s (`mapping.observe`), and `ConnectionEvent`s go out when the session is lost
and regained. pyvmomi blocks, so every call runs in a worker thread (`asyncio.to_thread`).

vSphere's "suspended" is a suspend to disk, not a pause of the vCPUs; it is the nearest
thing vSphere has, and the driver reports it as PAUSED with libvirt's reason "user".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from pyVim import connect as vim_connect
from pyVmomi import vim, vmodl

from kubevisor.core.migration import JobStats
from kubevisor.drivers import base, events, supervisor
from kubevisor.drivers.vsphere import inventory, mapping

log = logging.getLogger("kubevisor.drivers.vsphere")
T = TypeVar("T")

# --- the driver ----------------------------------------------------------------------------

S = base.DomainState
E = base.EventKind


class VsphereHypervisor(base.Connects):
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
        self._location = mapping.parse_uri(uri)
        self._credentials = (username, password)
        self._verify_tls = verify_tls
        self._poll_interval = poll_interval
        self._known: dict[str, base.DomainInfo] = {}
        self._generation = 0
        self._acting = 0
        self._events = events.Broadcaster()
        self._supervisor = supervisor.Supervisor[inventory.Session](
            self._location.uri,
            open=self._open,
            watch=self._watch,
            close=self._logout,
            retryable=lambda error: isinstance(error, mapping.CONNECTION_ERRORS),
            events=self._events,
            backoff=(backoff_initial, backoff_max),
            name="vsphere-connection",
            logger=log,
        )

    @property
    def uri(self) -> str:
        return self._location.uri

    # --- connection ---

    async def connect(self) -> None:
        await self._supervisor.connect()

    async def close(self) -> None:
        await self._supervisor.close()

    async def _open(self) -> inventory.Session:
        """Log in and read the host's VMs; certificate and vSphere faults end the
        supervisor (PermanentError), transport and session errors are retried."""
        try:
            si, host = await asyncio.to_thread(
                inventory.login, self._location, self._credentials, verify_tls=self._verify_tls
            )
            seen = await asyncio.to_thread(inventory.domains, si, host)
        except ssl.SSLCertVerificationError as error:
            raise mapping.translate_error(error, doing=f"connecting to {self.uri}") from None
        except mapping.CONNECTION_ERRORS:
            raise
        except vmodl.MethodFault as error:
            raise mapping.translate_error(error, doing=f"connecting to {self.uri}") from None
        # What changed while disconnected is not published: the agent resyncs on
        # ConnectionEvent(connected=True).
        self._known = mapping.observe(self._known, seen)[0]
        return inventory.Session(si, host)

    @staticmethod
    async def _logout(session: inventory.Session) -> None:
        with contextlib.suppress(vmodl.MethodFault, *mapping.CONNECTION_ERRORS):
            await asyncio.to_thread(vim_connect.Disconnect, session.si)

    async def _watch(self, session: inventory.Session) -> str:
        """Poll the host's VMs and publish what others changed, until the session fails."""
        si, host = session.si, session.host
        while True:
            await asyncio.sleep(self._poll_interval)
            generation = self._generation
            if self._acting:
                continue
            try:
                seen = await asyncio.to_thread(inventory.domains, si, host)
            except mapping.CONNECTION_ERRORS as error:
                return f"{type(error).__name__}: {error}"
            except vmodl.MethodFault as error:
                log.warning(
                    "polling %s: %s", self.uri, mapping.translate_error(error, doing="polling")
                )
                continue
            if generation != self._generation:
                continue  # an operation ran meanwhile and published its own events
            self._known, changes = mapping.observe(self._known, seen)
            for event in changes:
                self._events.publish(event)

    def events(self) -> AsyncIterator[base.Event]:
        return self._events.subscribe()

    async def open_console(self, uuid: str, *, force: bool = False) -> base.Console:
        raise base.ConsoleUnsupported(
            f"the console of {uuid}: the vSphere driver has no serial consoles (a vSphere VM's "
            "console is its remote display, in the vSphere client)"
        )

    async def open_display(self, uuid: str) -> base.Console:
        raise base.ConsoleUnsupported(
            f"the display of {uuid}: the vSphere driver serves no VNC display (a vSphere VM's "
            "screen is its WebMKS/VMRC console, in the vSphere client)"
        )

    async def screenshot(self, uuid: str) -> bytes:
        raise base.ConsoleUnsupported(
            f"the screen of {uuid}: the vSphere driver takes no screenshots (the vSphere "
            "client shows the VM's console)"
        )

    # --- calls ---

    async def _call(self, doing: str, fn: Callable[[vim.ServiceInstance], T]) -> T:
        session = self._supervisor.connection
        if session is None:
            raise base.RetryableError(f"{doing}: not connected to {self.uri}", delay=2.0)
        try:
            return await asyncio.to_thread(fn, session.si)
        except base.HypervisorError:
            raise
        except (vmodl.MethodFault, *mapping.CONNECTION_ERRORS) as error:
            raise mapping.translate_error(error, doing=doing) from None

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

    def _vm(self, si: vim.ServiceInstance, uuid: str) -> vim.VirtualMachine:
        """The VM with that instance UUID on this host; DomainNotFound if none is here."""
        session = self._supervisor.connection
        return inventory.find_vm(si, session.host if session else None, uuid, uri=self.uri)

    def _connected_host(self) -> vim.HostSystem:
        session = self._supervisor.connection
        if session is None:
            raise base.RetryableError(f"not connected to {self.uri}", delay=2.0)
        return session.host

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
                cpus=mapping.host_cpus(
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
                hypervisor_type=mapping.HYPERVISOR_TYPE,
                hypervisor_version=summary.config.product.version,
                # No libvirt here: the vCenter's API version stands in.
                libvirt_version=about.apiVersion,
                domain_types=(mapping.HYPERVISOR_TYPE,),
                uri=self.uri,
                disk_bytes=datastores,
            )

        return await self._call("reading host facts", read)

    async def datastores(self) -> mapping.Datastores:
        """The host's datastores' capacity and free space (the agent's disk capacity)."""

        def read(_si: vim.ServiceInstance) -> mapping.Datastores:
            stores = [d.summary for d in self._connected_host().datastore]
            return mapping.Datastores(
                capacity=sum(s.capacity for s in stores), free=sum(s.freeSpace for s in stores)
            )

        return await self._call("reading datastores", read)

    async def pci_devices(self) -> list[base.PciDeviceInfo]:
        # Passthrough on vSphere is set up per host by its admin; none is offered here.
        return []

    # --- domains ---

    async def define(self, xml: str) -> base.DomainInfo:
        config = mapping.vm_config(xml)
        if missing := mapping.unmapped(xml):
            raise base.PermanentError(
                f"defining {config.name}: the vSphere driver cannot give a VM "
                f"{', '.join(missing)} yet (it maps memory and vCPUs only)"
            )

        def define(si: vim.ServiceInstance) -> tuple[bool, str]:
            spec = vim.vm.ConfigSpec(
                name=config.name,
                memoryMB=config.memory_mib,
                numCPUs=config.vcpus,
                extraConfig=[vim.option.OptionValue(key=mapping.XML_KEY, value=xml)],
            )
            try:
                vm = self._vm(si, config.uuid)
            except base.DomainNotFound:
                vm = self._create(si, config, spec)
                return True, vm.runtime.powerState
            inventory.wait(si, vm.ReconfigVM_Task(spec=spec))
            return False, vm.runtime.powerState

        created, power_state = await self._act(f"defining {config.name}", define)
        seen = mapping.domain_info(uuid=config.uuid, name=config.name, power_state=power_state)
        info = mapping.reasoned(self._known.get(config.uuid), seen)
        self._record(config.uuid, info, (E.DEFINED, "added" if created else "updated"))
        return info

    def _create(
        self, si: vim.ServiceInstance, config: mapping.VmConfig, spec: vim.vm.ConfigSpec
    ) -> vim.VirtualMachine:
        elsewhere = si.RetrieveContent().searchIndex.FindByUuid(None, config.uuid, True, True)
        if elsewhere is not None:
            raise base.PermanentError(
                f"VM {config.uuid} already exists on host {elsewhere.runtime.host.name} "
                "of this vCenter"
            )
        host = self._connected_host()
        spec.uuid = spec.instanceUuid = config.uuid
        spec.guestId = mapping.GUEST_ID
        spec.files = vim.vm.FileInfo(vmPathName=f"[{host.datastore[0].name}]")
        datacenter = host.parent
        while not isinstance(datacenter, vim.Datacenter):
            datacenter = datacenter.parent
        task = datacenter.vmFolder.CreateVM_Task(
            config=spec, pool=host.parent.resourcePool, host=host
        )
        vm: vim.VirtualMachine = inventory.wait(si, task)
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
            inventory.wait(si, task)
            return str(vm.name)

        name = await self._act(f"{doing} {uuid}", power)
        if name is not None:
            self._record(uuid, base.DomainInfo(uuid, name, *becomes), event)

    async def start(self, uuid: str, *, paused: bool = False) -> None:
        if paused:
            # vSphere powers a VM on running; cold migration never asks for this on vmware
            # hosts (`core.coldmigration.refusal`).
            raise base.PermanentError(f"starting {uuid} paused: vSphere cannot")
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
                    inventory.wait(si, vm.PowerOffVM_Task())
                inventory.wait(si, vm.Destroy_Task())
            return was_on

        was_on = await self._act(f"undefining {uuid}", undefine)
        if was_on is not None:
            stopped = [(E.STOPPED, "destroyed")] if was_on else []
            self._record(uuid, None, *stopped, (E.UNDEFINED, "removed"))

    async def state(self, uuid: str) -> base.DomainInfo:
        def read(si: vim.ServiceInstance) -> base.DomainInfo:
            vm = self._vm(si, uuid)
            return mapping.domain_info(uuid=uuid, name=vm.name, power_state=vm.runtime.powerState)

        seen = await self._call(f"reading the state of {uuid}", read)
        return mapping.reasoned(self._known.get(uuid), seen)

    async def list_domains(self) -> list[base.DomainInfo]:
        def read(si: vim.ServiceInstance) -> dict[str, base.DomainInfo]:
            return inventory.domains(si, self._connected_host())

        seen = await self._call("listing VMs", read)
        return [mapping.reasoned(self._known.get(uuid), info) for uuid, info in seen.items()]

    async def domain_stats(self) -> list[base.DomainStats]:
        """None: per-VM usage of a vSphere host is vCenter's performance manager's to
        report, and the agent does not read it (yet)."""
        return []

    async def domain_diagnostics(self, uuid: str, *, lines: int) -> base.DomainDiagnostics:
        """Neither part: vCenter keeps a VM's statistics (its performance manager) and
        its vmware.log (the VM's datastore folder), which this driver does not read."""
        await self.state(uuid)  # DomainNotFound, as every driver
        return base.DomainDiagnostics(
            missing={
                "domstats": "the vSphere driver reads no per-VM statistics: see the VM's "
                "performance charts in vCenter",
                "qemu.log": "a vSphere VM has no QEMU log: its vmware.log is in the VM's "
                "folder on its datastore",
            }
        )

    async def domain_xml(self, uuid: str) -> str:
        """The XML the VM was defined from; a minimal one for VMs defined by others."""

        def read(si: vim.ServiceInstance) -> str:
            config = self._vm(si, uuid).config
            for option in config.extraConfig:
                if option.key == mapping.XML_KEY:
                    return str(option.value)
            return mapping.minimal_xml(
                name=config.name,
                uuid=uuid,
                memory_mib=config.hardware.memoryMB,
                vcpus=config.hardware.numCPU,
            )

        return await self._call(f"reading the XML of {uuid}", read)

    # --- live migration (vMotion) ---

    async def migrate(self, uuid: str, request: base.MigrationRequest) -> None:
        """vMotion to the host `request.dest_uri` names, in the same vCenter.

        vCenter runs the transfer itself: the XML, the bandwidth, downtime, post-copy and
        migrate URI options have no vMotion counterpart and are ignored; the disks stay on
        datastores the hosts share, so there is nothing to copy (`copy_disks` must be empty).
        """
        dest_uri, copy_disks = request.dest_uri, request.copy_disks
        target = mapping.parse_uri(dest_uri)
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
            host = inventory.find_host(si, target)
            spec = vim.vm.RelocateSpec(host=host, pool=host.parent.resourcePool)
            inventory.wait(si, vm.RelocateVM_Task(spec=spec))

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
