"""The placement state: hosts plus every claim, kept up to date incrementally.

Like kube-scheduler's cache of assumed pods, each decision is claimed before the next
one is made, so a burst of VMs never double-books a host or a pCPU. Claims are released
on deletion or failure; `rebuild` recreates the whole state from a listing of hosts and
claims (e.g. after a controller restart). Every claim or release touches one host's
usage, its group counts and its place in the host ranking: O(log hosts), no recount.

Usage values are frozen and replaced on change, so readers never see a half update.
This object is the one mutable thing in `core.placement`; the controller owns one.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import TypeVar

from kubevisor.core.placement.capacity import AllocationRatios, HostInventory, inventory
from kubevisor.core.placement.model import (
    CellUsage,
    Claim,
    HostSnapshot,
    HostUsage,
    ServerGroup,
)
from kubevisor.core.placement.weighers import Multipliers, Scale, static_score


class ClaimConflict(ValueError):
    """A claim that cannot be added: unknown host, VM already claimed, or pCPU already pinned."""


K = TypeVar("K")


def _discard(index: dict[K, set[str]], key: K, name: str) -> None:
    names = index.get(key)
    if names is not None:
        names.discard(name)
        if not names:
            del index[key]


def _rankable(host: HostSnapshot) -> bool:
    return host.ready and host.schedulable and not host.maintenance


def empty_usage(host: HostSnapshot) -> HostUsage:
    return HostUsage(cells=tuple(CellUsage() for _ in host.numa_cells))


def _add_pages(
    pages: tuple[tuple[int, int], ...], size: int | None, count: int
) -> tuple[tuple[int, int], ...]:
    if size is None or count == 0:
        return pages
    merged = dict(pages)
    merged[size] = merged.get(size, 0) + count
    return tuple(sorted((s, c) for s, c in merged.items() if c != 0))


def apply_claim(host: HostSnapshot, usage: HostUsage, claim: Claim, sign: int) -> HostUsage:
    """`usage` with `claim` added (sign=1) or removed (sign=-1); pure."""
    cells = list(usage.cells)
    pci = usage.pci
    if claim.numa is not None and claim.numa.pci:
        addresses = frozenset(device.address for device in claim.numa.pci)
        pci = pci | addresses if sign > 0 else pci - addresses
    if claim.numa is not None:
        position = {cell.id: i for i, cell in enumerate(host.numa_cells)}
        for fit in claim.numa.cells:
            i = position[fit.host_cell]
            taken = fit.pinned | fit.blocked
            if fit.host_cell == claim.numa.emulator_cell:
                taken |= claim.numa.emulator_pins
            old = cells[i]
            cells[i] = CellUsage(
                pinned=old.pinned | taken if sign > 0 else old.pinned - taken,
                shared_vcpus=old.shared_vcpus + sign * fit.shared_vcpus,
                memory_mib=old.memory_mib + sign * fit.memory_mib,
                hugepages=_add_pages(old.hugepages, fit.hugepage_kib, sign * fit.hugepages),
            )
    return HostUsage(
        vcpus=usage.vcpus + sign * claim.vcpus,
        pcpus=usage.pcpus + sign * claim.pcpus,
        memory_mib=usage.memory_mib + sign * claim.memory_mib,
        disk_mib=usage.disk_mib + sign * claim.disk_mib,
        vms=usage.vms + sign,
        cells=tuple(cells),
        pci=pci,
    )


class PlacementState:
    """Hosts, claims, per-host usage, group membership and the host ranking."""

    def __init__(
        self,
        *,
        defaults: AllocationRatios | None = None,
        multipliers: Multipliers | None = None,
    ) -> None:
        self.defaults = defaults or AllocationRatios()
        self.multipliers = multipliers or Multipliers()
        self._hosts: dict[str, HostSnapshot] = {}
        self._inventory: dict[str, HostInventory] = {}
        self._usage: dict[str, HostUsage] = {}
        self._claims: dict[str, Claim] = {}
        self._by_host: dict[str, set[str]] = {}
        self._groups: dict[str, dict[str, int]] = {}
        self._rules: dict[str, dict[str, ServerGroup]] = {}
        """Per group, each member's rule (its claim's ServerGroup), oldest claim first."""
        self._labels: dict[tuple[str, str], set[str]] = {}
        self._images: dict[str, set[str]] = {}
        self._sharing: dict[str, set[str]] = {}
        self._score: dict[str, float] = {}
        self._ranking: list[tuple[float, str]] = []
        self._scale = Scale()
        self._dirty = False
        self.conflicts: list[Claim] = []
        self._watchers: list[Callable[[Claim, int], None]] = []

    # -- building ---------------------------------------------------------------

    @classmethod
    def rebuild(
        cls,
        hosts: Iterable[HostSnapshot],
        claims: Iterable[Claim],
        *,
        defaults: AllocationRatios | None = None,
        multipliers: Multipliers | None = None,
    ) -> PlacementState:
        """A fresh state from a listing; claims that conflict land in `conflicts`."""
        state = cls(defaults=defaults, multipliers=multipliers)
        for host in hosts:
            state.add_host(host)
        for claim in claims:
            try:
                state.claim(claim)
            except ClaimConflict:
                state.conflicts.append(claim)
        return state

    def add_host(self, host: HostSnapshot) -> None:
        """Add or replace a host snapshot, keeping the claims already on it."""
        old = self._hosts.get(host.name)
        if old is not None:
            self._unindex(old)
        self._hosts[host.name] = host
        self._inventory[host.name] = inventory(host, self.defaults)
        self._by_host.setdefault(host.name, set())
        usage = empty_usage(host)
        for vm in sorted(self._by_host[host.name]):
            usage = apply_claim(host, usage, self._claims[vm], 1)
        self._usage[host.name] = usage
        self._index(host)
        self._dirty = True

    def remove_host(self, name: str) -> tuple[Claim, ...]:
        """Forget a host; returns the claims that were on it (now released)."""
        released = tuple(self.release(vm) for vm in sorted(self._by_host.get(name, ())))
        host = self._hosts.pop(name)
        self._unindex(host)
        del self._inventory[name], self._usage[name], self._by_host[name]
        self._dirty = True
        return tuple(c for c in released if c is not None)

    def _index(self, host: HostSnapshot) -> None:
        """Find hosts by label, cached image and shared storage without a scan."""
        for pair in host.labels.items():
            self._labels.setdefault(pair, set()).add(host.name)
        for digest in host.images:
            self._images.setdefault(digest, set()).add(host.name)
        if host.shared_storage is not None:
            self._sharing.setdefault(host.shared_storage, set()).add(host.name)

    def _unindex(self, host: HostSnapshot) -> None:
        for pair in host.labels.items():
            _discard(self._labels, pair, host.name)
        for digest in host.images:
            _discard(self._images, digest, host.name)
        if host.shared_storage is not None:
            _discard(self._sharing, host.shared_storage, host.name)

    def watch(self, watcher: Callable[[Claim, int], None]) -> None:
        """Call `watcher(claim, 1)` after every claim and `watcher(claim, -1)` after every
        release from now on: the quota ledger (`core.quota.Ledger`) follows claims so."""
        self._watchers.append(watcher)

    # -- claims -----------------------------------------------------------------

    def claim(self, claim: Claim) -> None:
        """Add a VM's claim; raises ClaimConflict if it cannot be held as given."""
        host = self._hosts.get(claim.host)
        if host is None:
            raise ClaimConflict(f"unknown host {claim.host!r} for {claim.vm}")
        if claim.vm in self._claims:
            raise ClaimConflict(
                f"{claim.vm} already holds a claim on {self._claims[claim.vm].host}"
            )
        usage = self._usage[claim.host]
        if claim.numa is not None:
            known = {cell.id for cell in host.numa_cells}
            unknown = sorted({f.host_cell for f in claim.numa.cells} - known)
            if unknown:
                raise ClaimConflict(f"{claim.vm} uses NUMA cells {unknown} {claim.host} lacks")
            taken = claim.numa.pcpus
            if not taken <= host.dedicated_cpus:
                raise ClaimConflict(f"{claim.vm} pins CPUs outside the dedicated set")
            for cell in usage.cells:
                if cell.pinned & taken:
                    overlap = sorted(cell.pinned & taken)
                    raise ClaimConflict(f"{claim.vm} pins pCPUs {overlap} already in use")
            devices = [device.address for device in claim.numa.pci]
            offered = {device.address for device in host.pci_devices}
            if not set(devices) <= offered:
                missing = sorted(set(devices) - offered)
                raise ClaimConflict(f"{claim.vm} claims PCI devices {missing} {claim.host} lacks")
            if len(set(devices)) != len(devices) or usage.pci & set(devices):
                taken_pci = sorted(usage.pci & set(devices)) or devices
                raise ClaimConflict(f"{claim.vm} claims PCI devices {taken_pci} already in use")
        self._usage[claim.host] = apply_claim(host, usage, claim, 1)
        self._claims[claim.vm] = claim
        self._by_host[claim.host].add(claim.vm)
        if claim.group is not None:
            members = self._groups.setdefault(claim.group.name, {})
            members[claim.host] = members.get(claim.host, 0) + 1
            self._rules.setdefault(claim.group.name, {})[claim.vm] = claim.group
        self._rerank(claim.host)
        for watcher in self._watchers:
            watcher(claim, 1)

    def release(self, vm: str) -> Claim | None:
        """Drop a VM's claim (deleted, failed, or moved); returns it, or None if none."""
        claim = self._claims.pop(vm, None)
        if claim is None:
            return None
        host = self._hosts[claim.host]
        self._usage[claim.host] = apply_claim(host, self._usage[claim.host], claim, -1)
        self._by_host[claim.host].discard(vm)
        if claim.group is not None:
            members = self._groups[claim.group.name]
            members[claim.host] -= 1
            if members[claim.host] == 0:
                del members[claim.host]
            if not members:
                del self._groups[claim.group.name]
            rules = self._rules[claim.group.name]
            del rules[claim.vm]
            if not rules:
                del self._rules[claim.group.name]
        self._rerank(claim.host)
        for watcher in self._watchers:
            watcher(claim, -1)
        return claim

    # -- reading ----------------------------------------------------------------

    def host(self, name: str) -> HostSnapshot:
        return self._hosts[name]

    def hosts(self) -> Iterator[HostSnapshot]:
        """Every host, by name (stable order for explanations and brute force)."""
        for name in sorted(self._hosts):
            yield self._hosts[name]

    def __len__(self) -> int:
        return len(self._hosts)

    def __contains__(self, name: object) -> bool:
        return name in self._hosts

    def inventory(self, name: str) -> HostInventory:
        return self._inventory[name]

    def usage(self, name: str) -> HostUsage:
        return self._usage[name]

    def claims(self) -> Mapping[str, Claim]:
        return MappingProxyType(self._claims)

    def claims_on(self, name: str) -> tuple[Claim, ...]:
        return tuple(self._claims[vm] for vm in sorted(self._by_host.get(name, ())))

    def group_members(self, group: str, host: str) -> int:
        return self._groups.get(group, {}).get(host, 0)

    def group_hosts(self, group: str) -> Mapping[str, int]:
        return MappingProxyType(self._groups.get(group, {}))

    def group_rule(self, group: str, *, besides: str) -> tuple[str, ServerGroup] | None:
        """The rule group `group` holds and the member that holds it: its oldest claim
        other than VM `besides` (the VM being placed, which may already hold one), or None
        while the group has no other member. After a restart, "oldest" is listing order."""
        for vm, rule in self._rules.get(group, {}).items():
            if vm != besides:
                return vm, rule
        return None

    def hosts_labelled(self, key: str, value: str) -> frozenset[str]:
        return frozenset(self._labels.get((key, value), ()))

    def hosts_caching(self, digest: str) -> frozenset[str]:
        """Hosts whose image cache holds the image of sha256 `digest`."""
        return frozenset(self._images.get(digest, ()))

    def hosts_sharing(self, storage: str) -> frozenset[str]:
        """Hosts that mount the shared storage named `storage`."""
        return frozenset(self._sharing.get(storage, ()))

    # -- ranking ----------------------------------------------------------------

    def ranked(self) -> Iterator[str]:
        """Ready, schedulable hosts, best request-independent weight first (ties by name).

        Do not claim or release while iterating.
        """
        if self._dirty:
            self._rank_all()
        for _, name in self._ranking:
            yield name

    def rank_position(self, name: str) -> tuple[float, str]:
        """Sort key of a host in `ranked()` order (hosts outside the ranking sort last)."""
        if self._dirty:
            self._rank_all()
        score = self._score.get(name)
        return (float("inf"), name) if score is None else (-score, name)

    def _static(self, name: str) -> float:
        return static_score(self._inventory[name], self._usage[name], self._scale, self.multipliers)

    def _rank_all(self) -> None:
        pool = [n for n, h in self._hosts.items() if _rankable(h)]
        inventories = [self._inventory[n] for n in pool]
        self._scale = Scale(
            memory=float(max((i.memory.capacity for i in inventories), default=1) or 1),
            vcpu=float(max((i.vcpu.capacity for i in inventories), default=1) or 1),
            disk=float(max((i.disk.capacity for i in inventories), default=1) or 1),
        )
        self._score = {n: self._static(n) for n in pool}
        self._ranking = sorted((-s, n) for n, s in self._score.items())
        self._dirty = False

    def _rerank(self, name: str) -> None:
        if self._dirty or name not in self._score:
            return
        old = (-self._score[name], name)
        del self._ranking[bisect.bisect_left(self._ranking, old)]
        score = self._static(name)
        self._score[name] = score
        bisect.insort(self._ranking, (-score, name))
