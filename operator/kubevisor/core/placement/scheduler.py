"""select_host: filter, weigh, choose -- without scanning every host per decision.

Hosts come from `PlacementState.ranked()` (best request-independent weight first) or,
when the request narrows them, from a smaller set (its hard-affinity group's hosts, or
the hosts carrying the labels of its selector and of its namespace's host pool); hosts
with the request's shared storage, then hosts caching its images, come first, so the
window cannot miss the hosts the disk weighers favour. Filters run lazily on that stream
until `window` hosts pass; those are weighed with Nova's normalised weighers and the best
wins (or a random one of the best `host_subset_size`, with an injected Random).
kube-scheduler does the same with `percentageOfNodesToScore`. Only when nothing fits does
the engine scan every host, to explain why.

`select_host_exhaustive` is the reference: every filter on every host, every feasible
host weighed. Tests and the benchmark compare the two.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kubevisor.core.placement import explain as explaining
from kubevisor.core.placement import filters, numa, pci, pools, weighers
from kubevisor.core.placement.explain import Explanation
from kubevisor.core.placement.model import Claim, GroupPolicy, NumaFit, Rejection, Request
from kubevisor.core.placement.state import PlacementState
from kubevisor.core.placement.weighers import Candidate

#: Filters run before NUMA fitting (which also yields the fit the claim needs).
_PRE_NUMA = tuple(f for f in filters.FILTERS if f is not filters.numa)


@dataclass(frozen=True, slots=True)
class Options:
    """How hard to look: `window` feasible hosts are weighed; `host_subset_size` as Nova's."""

    window: int = 8
    host_subset_size: int = 1


@dataclass(frozen=True, slots=True)
class Decision:
    """A host (and NUMA fit) for one request, plus the runners-up as alternates.

    `notes` say what the disk weighers found on the host ("has 1 of 1 images cached").
    """

    request: Request
    host: str
    numa: NumaFit | None
    weight: float
    considered: int
    alternates: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        """One line for the VM's Scheduled event."""
        head = f"placed on host {self.host} ({self.considered} considered)"
        return f"{head}: {', '.join(self.notes)}" if self.notes else head

    @property
    def claim(self) -> Claim:
        return claim_for(self.request, host=self.host, fit=self.numa)


@dataclass(frozen=True, slots=True)
class NoFit:
    request: Request
    explanation: Explanation

    @property
    def message(self) -> str:
        return self.explanation.message


def claim_for(request: Request, *, host: str, fit: NumaFit | None) -> Claim:
    """The claim a request makes on `host` once fitted."""
    return Claim(
        vm=request.name,
        host=host,
        vcpus=0 if request.dedicated else request.vcpus,
        pcpus=len(fit.pcpus) if fit is not None else 0,
        memory_mib=request.memory_mib,
        disk_mib=request.disk_mib,
        numa=fit,
        group=request.group,
    )


def evaluate(
    state: PlacementState,
    request: Request,
    name: str,
    *,
    checks: Iterable[filters.Filter] = _PRE_NUMA,
) -> Candidate | Rejection:
    """Every filter on one host (`checks`, then NUMA fitting and PCI devices); the
    candidate carries its NUMA fit and PCI devices."""
    host = state.host(name)
    for check in checks:
        rejection = check(host, request, state)
        if rejection is not None:
            return rejection
    fitted: NumaFit | None = None
    if request.numa_aware:
        found = numa.fit(
            host=host,
            usages=state.usage(name).cells,
            request=request,
            ratios=state.inventory(name).ratios,
        )
        if isinstance(found, Rejection):
            return found
        fitted = found
    if not request.pci:
        return Candidate(host, fitted)
    devices = pci.assign(
        host=host,
        in_use=state.usage(name).pci,
        request=request,
        local_cells=(cell.host_cell for cell in fitted.cells) if fitted else (),
    )
    if isinstance(devices, Rejection):
        return devices
    if fitted is None:
        return Candidate(host, NumaFit(cells=(), pci=devices))
    return Candidate(host, dataclasses.replace(fitted, pci=devices))


def _favoured(state: PlacementState, request: Request) -> list[frozenset[str]]:
    """Hosts the disk weighers favour for this request, the heavier weigher's first: those
    with its shared storage, those caching any of its images (none with a multiplier <= 0)."""
    multipliers = state.multipliers
    tiers: list[tuple[float, frozenset[str]]] = []
    if request.shared_storage is not None and multipliers.shared_storage > 0:
        tiers.append((multipliers.shared_storage, state.hosts_sharing(request.shared_storage)))
    if request.images and multipliers.image_locality > 0:
        caching = frozenset().union(*(state.hosts_caching(d) for d in request.images))
        tiers.append((multipliers.image_locality, caching))
    tiers.sort(key=lambda tier: -tier[0])
    return [hosts for _, hosts in tiers if hosts]


def _tier(favoured: list[frozenset[str]], name: str) -> int:
    return next((i for i, hosts in enumerate(favoured) if name in hosts), len(favoured))


def _in_rank_order(state: PlacementState, names: frozenset[str]) -> Iterator[str]:
    if len(names) * 8 < len(state):
        yield from sorted(names, key=state.rank_position)
    else:
        yield from (name for name in state.ranked() if name in names)


def _stream(state: PlacementState, request: Request) -> Iterator[str]:
    group = request.group
    if group is not None and group.policy == GroupPolicy.AFFINITY:
        members = state.group_hosts(group.name)
        if members:
            yield from sorted(members, key=state.rank_position)
            return
    favoured = _favoured(state, request)
    labels = pools.required_labels(request)
    if labels:
        sets = [state.hosts_labelled(k, v) for k, v in labels]
        chosen = frozenset.intersection(*sets)
        if len(chosen) * 8 < len(state):
            yield from sorted(
                chosen, key=lambda name: (_tier(favoured, name), state.rank_position(name))
            )
            return
    taken: frozenset[str] = frozenset()
    for hosts in favoured:
        yield from _in_rank_order(state, hosts - taken)
        taken |= hosts
    yield from (name for name in state.ranked() if name not in taken)


def _choose(
    state: PlacementState,
    request: Request,
    candidates: list[Candidate],
    *,
    considered: int,
    options: Options,
    rng: random.Random | None,
) -> Decision:
    weights = weighers.weigh(candidates, request, state, state.multipliers)
    order = sorted(
        range(len(candidates)),
        key=lambda i: (-weights[i], state.rank_position(candidates[i].host.name)),
    )
    pick = order[0]
    subset = min(options.host_subset_size, len(order))
    if rng is not None and subset > 1:
        pick = order[rng.randrange(subset)]
    best = candidates[pick]
    return Decision(
        request=request,
        host=best.host.name,
        numa=best.numa,
        weight=weights[pick],
        considered=considered,
        alternates=tuple(candidates[i].host.name for i in order if i != pick),
        notes=weighers.notes(best.host, request),
    )


def select_host(
    state: PlacementState,
    request: Request,
    *,
    options: Options | None = None,
    rng: random.Random | None = None,
) -> Decision | NoFit:
    """Choose a host for `request` against `state` (which this does not change)."""
    options = options or Options()
    window = max(options.window, options.host_subset_size, 1)
    group = request.group
    soft = group.policy if group is not None else None
    members = state.group_hosts(group.name) if group is not None else {}
    candidates: list[Candidate] = []
    seen: set[str] = set()
    counted = 0
    considered = 0
    for name in _stream(state, request):
        considered += 1
        seen.add(name)
        found = evaluate(state, request, name)
        if isinstance(found, Rejection):
            continue
        candidates.append(found)
        # Hosts the soft-anti-affinity weigher will push down do not fill the window.
        if soft == GroupPolicy.SOFT_ANTI_AFFINITY and name in members:
            continue
        counted += 1
        if counted >= window:
            break
    if soft == GroupPolicy.SOFT_AFFINITY:
        for name in sorted(set(members) - seen):
            considered += 1
            found = evaluate(state, request, name)
            if not isinstance(found, Rejection):
                candidates.append(found)
    if not candidates:
        return NoFit(request, explaining.explain(state, request))
    return _choose(state, request, candidates, considered=considered, options=options, rng=rng)


def select_host_exhaustive(
    state: PlacementState,
    request: Request,
    *,
    hosts: Iterable[str] | None = None,
) -> Decision | NoFit:
    """Reference: every filter on every host, every feasible host weighed."""
    names = list(hosts) if hosts is not None else [h.name for h in state.hosts()]
    candidates: list[Candidate] = []
    rejections: list[Rejection] = []
    for name in names:
        found = evaluate(state, request, name)
        if isinstance(found, Rejection):
            rejections.append(found)
        else:
            candidates.append(found)
    if not candidates:
        return NoFit(request, explaining.summarize(len(names), rejections))
    return _choose(state, request, candidates, considered=len(names), options=Options(), rng=None)


def place(
    state: PlacementState,
    request: Request,
    *,
    options: Options | None = None,
    rng: random.Random | None = None,
) -> Decision | NoFit:
    """select_host, then claim the decision in `state` so the next request sees it."""
    decision = select_host(state, request, options=options, rng=rng)
    if isinstance(decision, Decision):
        state.claim(decision.claim)
    return decision
