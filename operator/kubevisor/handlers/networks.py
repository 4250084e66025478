"""The controller's network wiring: addresses, MACs and VNIs held for Networks and VMs.

The controller (handlers/controller.py) calls this module at a few points, and it keeps
the allocators of `core.network` (one `AddressPool` per Network, a `MacRegistry` and a
`VniPool` for the cluster) in step with the API server:

- `load` rebuilds them at start from the listings: the VMs' status.interfaces, the
  Networks' status.dhcpPorts and VNIs, in listing order; a record that cannot be held is
  reported in the Network's AddressConflict condition;
- `request` gives placement the Networks a VM names (the physical_networks and
  tunnel_endpoint filters), and `allocate`, under the placement lock right after placement
  chose a host, takes the VM's interfaces (`allocation.allocate`, all or nothing) and the
  host's DHCP port on each Network with DHCP; a refusal leaves the VM unplaced;
- `record` writes status.interfaces before the controller binds the VM (the agent starts
  only once it is bound, so it always sees them) and the Networks' statuses;
- `release` gives everything back when the VM's finalizer goes (the VM is deleted), never
  before: an address and MAC stay with their VM through stop/start, restart, migration,
  failover and controller restarts, because they are read back from its status;
- `services` keeps the EndpointSlices of Services that front VMs (handlers/services.py);
- `hold_target` (under the placement lock, when a live migration is admitted) takes the
  target host's DHCP ports, which live until `migration_ended`, so the target's DHCP
  server answers the guest from the switch on;
- `on_vm` and `on_network` follow watch events: each host's DHCP port lives while a VM of
  the Network is bound there (or migrating there), each Network carries `used`, `free`,
  `vni`, `dhcpPorts` and Ready, and a finalizer while VMs hold addresses on it, so its
  deletion waits for them.

Everything that changes the allocators runs without awaiting in between, so the asyncio
loop makes it atomic with the placement it belongs to.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kubevisor.api import objects
from kubevisor.api.network import Network, NetworkSpec
from kubevisor.api.virtualmachine import InterfaceStatus, VirtualMachine
from kubevisor.core import conditions
from kubevisor.core.network import allocation, ipam, netstatus
from kubevisor.core.network.ipam import AddressPool, Owner, Reason, Refusal
from kubevisor.core.network.mac import MacRegistry
from kubevisor.core.network.vni import VniPool
from kubevisor.core.placement import inputs, scheduler
from kubevisor.core.placement.model import Request
from kubevisor.core.placement.scheduler import Decision, NoFit
from kubevisor.handlers.port import ControllerPort
from kubevisor.handlers.services import Services
from kubevisor.kube.client import Kube, Object
from kubevisor.kube.errors import is_not_found

log = logging.getLogger("kubevisor.controller.networks")

FINALIZER = "kubevisor.io/network-protection"


@dataclass(frozen=True, slots=True)
class Use:
    """Where a VM is bound and the Networks ("namespace/name") it holds addresses on."""

    host: str | None
    networks: frozenset[str]


NO_USE = Use(None, frozenset())


@dataclass(frozen=True, slots=True)
class Unplaced:
    """Why a VM was not placed, for its Scheduled condition and the placement metric."""

    filter: str
    """The metric's label: the first placement filter that refused, or the refusal's reason."""
    reason: str
    message: str

    @classmethod
    def of(cls, outcome: NoFit | Refusal) -> Unplaced:
        if isinstance(outcome, Refusal):
            return cls(outcome.reason, outcome.reason, outcome.message)
        reasons = outcome.explanation.reasons
        return cls(reasons[0].filter if reasons else "no-hosts", "Unschedulable", outcome.message)


def _namespace(key: str) -> str:
    return key.split("/", 1)[0]


def _use(key: str, vm: VirtualMachine) -> Use:
    status = vm.status
    if status is None:
        return NO_USE
    names = frozenset(f"{_namespace(key)}/{i.network}" for i in status.interfaces)
    return Use(status.host, names)


def _named(key: str, vm: VirtualMachine) -> list[str]:
    """The Networks the VM's spec names, in spec order."""
    return [f"{_namespace(key)}/{i.network}" for i in vm.spec.networks if i.network]


class Networks:
    """The allocators and what the API server was last told of them."""

    def __init__(self, port: ControllerPort, kube: Kube) -> None:
        self.port = port
        self.kube = kube
        self.networks: dict[str, Network] = {}
        self.specs: dict[str, NetworkSpec] = {}
        self.objects: dict[str, Object] = {}
        """Each Network as last seen or written (status to diff against, finalizers)."""
        self.pools: dict[str, AddressPool] = {}
        self.macs = MacRegistry()
        self.vnis = VniPool()
        self.vni_refusals: dict[str, Refusal] = {}
        self.conflicts: dict[str, dict[tuple[Owner, str], str]] = {}
        """Per Network, the records a rebuild could not hold, by owner and what ("mac",
        "address")."""
        self.known: dict[str, VirtualMachine] = {}
        """Every VM as last seen, to release what it holds when it is gone."""
        self.uses: dict[str, Use] = {}
        self.allocated: dict[str, tuple[InterfaceStatus, ...]] = {}
        """Interfaces `allocate` took for a VM and `record` has not written yet."""
        self.released: set[str] = set()
        """VMs whose addresses went with their finalizer; they are deleted."""
        self.targets: dict[str, str] = {}
        """The target host of each VM a live migration moves, from its admission until the
        job ends: that host keeps its DHCP ports on the VM's Networks meanwhile."""
        self.services = Services(port, kube)

    # -- start-up -------------------------------------------------------------------------

    def load(self, *, networks: Iterable[Object], vms: Iterable[Object]) -> None:
        """Rebuild the allocators from the listings, before any event is handled."""
        for obj in vms:
            vm = _parse_vm(obj)
            if vm is not None:
                self._adopt(objects.key(obj["metadata"]), vm)
        for obj in networks:
            network = _parse_network(obj)
            if network is not None:
                self._add_network(objects.key(obj["metadata"]), obj, network)

    def _adopt(self, key: str, vm: VirtualMachine) -> None:
        """A VM seen for the first time: hold what its status records."""
        self.known[key] = vm
        self.uses[key] = _use(key, vm)
        self._hold_records(key, vm)

    def _hold_records(self, key: str, vm: VirtualMachine, *, only: str | None = None) -> None:
        """Hold the MACs and addresses the VM's status records (on Network `only`, or on
        all)."""
        for interface in vm.status.interfaces if vm.status else []:
            if only is not None:
                continue  # the MACs were claimed when the VM was first seen
            network = f"{_namespace(key)}/{interface.network}"
            owner = Owner(key, interface.name)
            refused = self.macs.claim(owner, interface.mac_address)
            if refused is not None:
                self._conflict(network, (owner, "mac"), refused.message)
        for network, owner, address in ipam.vm_records(vm):
            if only not in (None, network):
                continue
            pool = self.pools.get(network)
            refused = pool.hold(owner, address) if pool is not None else None
            if refused is not None:
                message = f"{owner} records {address}: {refused.message}"
                self._conflict(network, (owner, "address"), message)

    def _conflict(self, network: str, what: tuple[Owner, str], message: str) -> None:
        log.error("network %s: %s", network, message)
        self.conflicts.setdefault(network, {})[what] = message

    def _add_network(self, key: str, obj: Object, network: Network) -> None:
        """A Network seen for the first time: its pool holds what the VMs and its own
        status record (VMs first, in listing order), and it gets its VNI."""
        self.objects[key] = obj
        self.networks[key] = network
        self.specs[key] = network.spec
        self.pools[key] = AddressPool.of(key, network.spec.subnet)
        for vm_key, vm in self.known.items():
            if vm_key not in self.released:
                self._hold_records(vm_key, vm, only=key)
        for owner, address in ipam.port_records(network):
            refused = self.pools[key].hold(owner, address)
            if refused is not None:
                message = f"{owner} records {address}: {refused.message}"
                self._conflict(key, (owner, "address"), message)
        self._ensure_vni(key)

    def _ensure_vni(self, key: str) -> None:
        network = self.networks[key]
        if network.spec.type != "overlay" or self.vnis.held_by(key) is not None:
            return
        recorded = network.status.vni if network.status else None
        got = self.vnis.allocate(key, network.spec.requested_vni or recorded)
        if isinstance(got, Refusal):
            self.vni_refusals[key] = got
        else:
            self.vni_refusals.pop(key, None)

    # -- placement (under the controller's lock) ------------------------------------------

    def request(self, vm: VirtualMachine) -> Request:
        """What the VM asks placement for, its Networks' segments (and its namespace's
        host pool, handlers/namespaces.py) included."""
        pool = self.port.namespaces.pool(_namespace(objects.key(vm.metadata)))
        return inputs.request(vm, networks=self.specs, pool=pool)

    def claimed_request(self, vm: VirtualMachine) -> Request:
        """`inputs.claimed_request` (the size its claim holds) with the VM's Networks'
        segments: what a live migration's target must offer."""
        wanted = self.request(vm)
        return dataclasses.replace(
            inputs.claimed_request(vm),
            physical_networks=wanted.physical_networks,
            overlay=wanted.overlay,
            namespace_pool=wanted.namespace_pool,
        )

    def place(
        self, key: str, vm: VirtualMachine, options: scheduler.Options
    ) -> Decision | Unplaced:
        """Place the VM (its Networks' segments included) and take its addresses there."""
        request = self.request(vm)
        return self.allocate(key, vm, scheduler.place(self.port.state, request, options=options))

    def allocate(
        self, key: str, vm: VirtualMachine, decision: Decision | NoFit
    ) -> Decision | Unplaced:
        """Take the interfaces of a VM placement just put on a host, and the host's DHCP
        ports: the decision stands, or why the VM stays unplaced (no host fits, or its
        addresses cannot be had: then nothing stays taken and the claim is released).
        Called under the placement lock, before the VM is bound."""
        if not isinstance(decision, Decision):
            return Unplaced.of(decision)
        refused = self._take(key, vm, decision.host)
        if refused is not None:
            self.port.state.release(key)
            return Unplaced.of(refused)
        return decision

    def _take(self, key: str, vm: VirtualMachine, host: str) -> Refusal | None:
        if not _named(key, vm):
            return None
        refused = self._not_ready(key, vm)
        got = refused or allocation.allocate(vm, pools=self._usable(key), macs=self.macs)
        if isinstance(got, Refusal):
            return got
        use = Use(host, frozenset(f"{_namespace(key)}/{i.network}" for i in got))
        refused = self._take_ports(host, use.networks)
        if refused is not None:
            self._undo(key, vm)
            return refused
        self.allocated[key] = got
        self.uses[key] = use
        return None

    def _take_ports(self, host: str, networks: Iterable[str]) -> Refusal | None:
        """The DHCP port of `host` on each of `networks` with DHCP that has none there yet,
        all or nothing."""
        owner = Owner.dhcp(host)
        taken: list[AddressPool] = []
        for network in sorted(networks):
            pool = self.pools.get(network)
            if pool is None or not self.specs[network].dhcp:
                continue
            if pool.held_by(owner) is not None:
                continue
            port = pool.allocate(owner)
            if isinstance(port, Refusal):
                for held in taken:
                    held.release(owner)
                return Refusal(port.reason, f"the DHCP server of host {host}: {port.message}")
            taken.append(pool)
        return None

    def _not_ready(self, key: str, vm: VirtualMachine) -> Refusal | None:
        """Why a Network the VM names cannot take it now: being deleted (unless the VM
        holds an address there already), or an overlay without its VNI."""
        for interface in vm.spec.networks:
            network = f"{_namespace(key)}/{interface.network}"
            obj = self.objects.get(network)
            if obj is None:
                continue  # allocation refuses it: NetworkNotFound
            held = self.pools[network].held_by(Owner(key, interface.name)) is not None
            if obj["metadata"].get("deletionTimestamp") and not held:
                return Refusal(
                    Reason.NETWORK_NOT_FOUND,
                    f"interface {interface.name}: network {network} is being deleted",
                )
            vni = self.vni_refusals.get(network)
            if vni is not None:
                return Refusal(
                    vni.reason,
                    f"interface {interface.name}: network {network} has no VNI: {vni.message}",
                )
        return None

    def _usable(self, key: str) -> Mapping[str, AddressPool]:
        return {n: p for n, p in self.pools.items() if _namespace(n) == _namespace(key)}

    def _undo(self, key: str, vm: VirtualMachine) -> None:
        """Give back what `allocate` took beyond what the VM's status records."""
        self.allocated.pop(key, None)
        allocation.release(vm, pools=self.pools, macs=self.macs)
        self._hold_records(key, vm)
        self.uses[key] = _use(key, vm)

    async def record(self, key: str, obj: Object) -> Object:
        """Write what `allocate` took: the VM's status.interfaces (when they changed) and
        the statuses of its Networks (their DHCP ports, finalizers). Returns the VM as
        written. Called after the placement lock, before the VM is bound."""
        got = self.allocated.pop(key, None)
        if got is None:
            return obj
        wanted = [interface.to_wire() for interface in got]
        current = (obj.get("status") or {}).get("interfaces") or []
        if [InterfaceStatus.model_validate(i).to_wire() for i in current] != wanted:
            meta = obj["metadata"]
            try:
                obj = await self.kube.apply_vm_interfaces(meta["namespace"], meta["name"], wanted)
            except Exception:
                self.forget_allocation(key, obj)
                raise
        for network in sorted(self.uses[key].networks):
            await self.sync(network)
        return obj

    def forget_allocation(self, key: str, obj: Object) -> None:
        """The bind failed after `allocate`: give back what its status does not record."""
        vm = _parse_vm(obj)
        if vm is not None:
            self._undo(key, vm)

    # -- live migrations ------------------------------------------------------------------

    def hold_target(self, key: str, host: str) -> Refusal | None:
        """A live migration of VM `key` to `host` is being admitted (under the placement
        lock, before the job goes Preparing): take the host's DHCP ports on the VM's
        Networks with DHCP, so the target's agent builds a DHCP server that answers the
        guest from the switch on. A refusal (a pool with no free address) takes nothing.
        After a restart (the job in flight, no pool loaded yet) this only notes the
        target: its ports are read back from the Networks' status.dhcpPorts."""
        refused = self._take_ports(host, self.uses.get(key, NO_USE).networks)
        if refused is None:
            self.targets[key] = host
        return refused

    async def write_target(self, key: str) -> None:
        """Write the statuses of the Networks of VM `key` after `hold_target`: the target's
        DHCP ports are in status.dhcpPorts before its agent prepares."""
        for network in sorted(self.uses.get(key, NO_USE).networks):
            await self.sync(network)

    async def migration_ended(self, key: str) -> None:
        """The live migration of VM `key` ended: the target keeps its DHCP ports only if
        the VM is bound there now (or another VM of the Network is)."""
        if self.targets.pop(key, None) is None:
            return
        before = self.uses.get(key, NO_USE)
        await self.on_vm(key)  # a moved VM names its new host now
        for network in sorted(before.networks | self.uses.get(key, NO_USE).networks):
            await self.sync(network)

    # -- VMs ------------------------------------------------------------------------------

    async def release(self, key: str, obj: Object) -> None:
        """The VM's finalizer is about to go: free its addresses and MACs."""
        vm = _parse_vm(obj) or self.known.get(key)
        if vm is None:
            return
        self._release(key, vm)
        self.released.add(key)
        before = self.uses.get(key, NO_USE)
        self.uses[key] = NO_USE
        for network in sorted(before.networks | set(_named(key, vm))):
            await self.sync(network)

    def _release(self, key: str, vm: VirtualMachine) -> None:
        self.allocated.pop(key, None)
        freed = allocation.release(vm, pools=self.pools, macs=self.macs)
        for held in self.conflicts.values():
            for what in [what for what in held if what[0].vm == key]:
                del held[what]
        if freed:
            log.info("%s: released %s", key, ", ".join(map(str, freed)))

    async def on_vm(self, key: str) -> None:
        """After the controller handled an event of VM `key`: follow where it is bound
        (DHCP ports) and, once it is gone, release what it still holds."""
        obj = self.port.vm(key)
        parsed = _parse_vm(obj) if obj is not None else None
        await self.services.on_vm(key, parsed)
        before = self.uses.get(key, NO_USE)
        if obj is None:
            vm = self.known.pop(key, None)
            if vm is not None and key not in self.released:
                self._release(key, vm)
            self.released.discard(key)
            self.uses.pop(key, None)
            after = NO_USE
        else:
            vm = parsed
            if vm is None:
                return
            if key not in self.known:
                self._adopt(key, vm)
            self.known[key] = vm
            if key not in self.allocated and key not in self.released:
                self.uses[key] = _use(key, vm)
            after = self.uses.get(key, NO_USE)
        if before != after:
            for network in sorted(before.networks | after.networks):
                await self.sync(network)

    # -- Networks -------------------------------------------------------------------------

    async def on_network(self, event: str | None, obj: Object) -> None:
        """A watch event of a Network."""
        key = objects.key(obj["metadata"])
        if event == "DELETED":
            self._forget(key)
            return
        network = _parse_network(obj)
        if network is None:
            return
        old = self.networks.get(key)
        if old is None:
            self._add_network(key, obj, network)
        else:
            self.objects[key] = obj
            self.networks[key] = network
            self.specs[key] = network.spec
            if network.spec.subnet != old.spec.subnet:
                self._resize(key, network)
        await self.sync(key)
        if old is None or old.spec != network.spec:
            await self.port.retry_pending()  # a VM refused for this Network may fit now

    def _resize(self, key: str, network: Network) -> None:
        """Pools, gateway or reserved addresses changed: a new pool holding every address
        held now (one that became the gateway or reserved is a conflict)."""
        old = self.pools[key]
        self.pools[key] = AddressPool.of(key, network.spec.subnet)
        for conflict in ipam.rebuild(self.pools[key], old.assignments().items()):
            self._conflict(key, (conflict.owner, "address"), conflict.refusal.message)

    def _forget(self, key: str) -> None:
        self.networks.pop(key, None)
        self.specs.pop(key, None)
        self.objects.pop(key, None)
        self.pools.pop(key, None)
        self.conflicts.pop(key, None)
        self.vni_refusals.pop(key, None)
        self.vnis.release(key)

    def users(self, key: str) -> list[str]:
        """The VMs holding an address on Network `key`, sorted."""
        pool = self.pools.get(key)
        return sorted({o.vm for o in pool.owners() if not o.is_dhcp}) if pool else []

    async def sync(self, key: str) -> None:
        """Bring Network `key` in step: its DHCP ports follow the hosts its VMs are bound
        to or migrating to, its finalizer is there while VMs use it, its status says so."""
        network = self.networks.get(key)
        if network is None:
            return
        pool = self.pools[key]
        self._ensure_vni(key)
        hosts = set()
        if network.spec.dhcp:
            on_it = [(vm, u) for vm, u in self.uses.items() if key in u.networks]
            hosts = {u.host for _, u in on_it if u.host}
            hosts |= {self.targets[vm] for vm, _ in on_it if vm in self.targets}
        for owner in [o for o in pool.owners() if o.is_dhcp and o.host not in hosts]:
            pool.release(owner)
        for host in sorted(hosts):
            port = pool.allocate(Owner.dhcp(host))
            if isinstance(port, Refusal):
                log.warning("network %s: no DHCP port for host %s: %s", key, host, port.message)
        users = self.users(key)
        await self._finalizer(key, keep=bool(users))
        obj = self.objects[key]
        deleting = bool(obj["metadata"].get("deletionTimestamp"))
        ports = {o.host: a for o, a in pool.assignments().items() if o.is_dhcp}
        current = obj.get("status") or {}
        wanted = netstatus.network_status(
            netstatus.Inputs(
                generation=int(obj["metadata"].get("generation") or 0),
                overlay=network.spec.type == "overlay",
                used=pool.used,
                free=pool.free,
                vni=self.vni_refusals.get(key) or self.vnis.held_by(key),
                ports=ports,
                users=users,
                deleting=deleting,
                conflicts=sorted(self.conflicts.get(key, {}).values()),
            ),
            current=current,
            now=self.port.clock(),
        )
        if deleting and not users:
            return  # the finalizer is gone: the Network goes too
        if conditions.differs(current, wanted):
            meta = obj["metadata"]
            reply = await self._write(
                self.kube.apply_network_status(meta["namespace"], meta["name"], wanted)
            )
            if reply is not None:
                self.objects[key] = reply

    async def _finalizer(self, key: str, *, keep: bool) -> None:
        meta = self.objects[key]["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if (FINALIZER in finalizers) == keep or (keep and meta.get("deletionTimestamp")):
            return
        if keep:
            finalizers.append(FINALIZER)
        else:
            finalizers.remove(FINALIZER)
        patch = {"metadata": {"finalizers": finalizers or None}}
        reply = await self._write(self.kube.patch_network(meta["namespace"], meta["name"], patch))
        if reply is not None:
            self.objects[key] = reply

    async def _write(self, call: Any) -> Object | None:
        """Await a write of a Network; None when the Network is gone meanwhile."""
        try:
            reply: Object = await call
        except Exception as error:
            if is_not_found(error):
                return None
            raise
        return reply


def _parse_vm(obj: Object) -> VirtualMachine | None:
    try:
        return VirtualMachine.model_validate(obj)
    except ValidationError:
        return None  # the controller logs it


def _parse_network(obj: Object) -> Network | None:
    try:
        return Network.model_validate(obj)
    except ValidationError as invalid:
        log.error("network %s cannot be read: %s", objects.key(obj["metadata"]), invalid)
        return None
