"""Placement benchmark: decisions per second at 1,000 / 5,000 / 10,000 hosts.

Each host: 2 NUMA cells x 16 cores x 2 threads (64 pCPUs), 256 GiB, ratios 4.0 CPU /
1.0 RAM; the first 8 cores of each cell (32 pCPUs) are the dedicated set, the rest
shared. Every host is pre-loaded with 20 VMs (16 shared, 4 pinned). Then 10,000 VMs are
placed from a mix: 70% shared 1-8 vCPU, 20% dedicated with NUMA and thread policies,
10% in anti-affinity groups of 5. The naive reference (full recount of usage from every
claim, then every filter on every host) runs in the same process on fewer decisions and
is compared per decision.

Quotas (issue 20): the same workload is then placed twice more on fresh copies of the
first size's pre-loaded state, spread over `--namespaces` namespaces (pre-loaded VMs
too), without and with a quota per namespace; with them every decision first checks its
namespace's quota as the controller does under its lock (`core.quota`: the namespace's
usage summed from the claims, then `admit`). The limits are high enough that none refuses,
so both runs place the same VMs and the difference is the check's cost.

Run: .venv/bin/python bench/placement.py [--sizes 1000,5000,10000] [--vms 10000]
     [--namespaces 1000]
Prints figures; it is not a timed test.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import statistics
import sys
import time
from dataclasses import replace

from kubevisor.core import quota
from kubevisor.core.placement import numa, scheduler
from kubevisor.core.placement.capacity import AllocationRatios
from kubevisor.core.placement.model import (
    CpuPolicy,
    GroupPolicy,
    GuestCell,
    HostSnapshot,
    NumaCell,
    Request,
    ServerGroup,
    ThreadPolicy,
)
from kubevisor.core.placement.scheduler import Decision
from kubevisor.core.placement.state import PlacementState

GIB = 1024
RATIOS = AllocationRatios()


def make_host(name: str) -> HostSnapshot:
    cells = []
    dedicated: set[int] = set()
    for c in range(2):
        base = c * 32
        siblings = tuple(frozenset({base + 2 * k, base + 2 * k + 1}) for k in range(16))
        cells.append(
            NumaCell(
                id=c,
                cpus=frozenset(range(base, base + 32)),
                memory_mib=128 * GIB,
                siblings=siblings,
            )
        )
        dedicated |= set(range(base, base + 16))
    every = frozenset(range(64))
    return HostSnapshot(
        name=name,
        vcpus=64,
        memory_mib=256 * GIB,
        disk_mib=4096 * GIB,
        shared_cpus=every - dedicated,
        dedicated_cpus=frozenset(dedicated),
        labels={"rack": f"r{int(name[1:]) % 40}"},
        numa_cells=tuple(cells),
        cpu_model="Icelake-Server",
        hypervisor_type="kvm",
    )


def shared_vm(name: str, rng: random.Random) -> Request:
    vcpus = rng.randint(1, 8)
    return Request(
        name=name, vcpus=vcpus, memory_mib=vcpus * rng.choice((1, 2)) * GIB, disk_mib=20 * GIB
    )


def dedicated_vm(name: str, rng: random.Random) -> Request:
    vcpus = rng.choice((2, 4, 6, 8))
    policy = rng.choice(
        (ThreadPolicy.PREFER, ThreadPolicy.PREFER, ThreadPolicy.ISOLATE, ThreadPolicy.REQUIRE)
    )
    if policy == ThreadPolicy.ISOLATE:
        vcpus = min(vcpus, 4)
    cells: tuple[GuestCell, ...] = ()
    memory = vcpus * 2 * GIB
    if rng.random() < 0.3:
        half = vcpus // 2
        cells = (
            GuestCell(0, frozenset(range(half)), memory // 2),
            GuestCell(1, frozenset(range(half, vcpus)), memory // 2),
        )
    return Request(
        name=name,
        vcpus=vcpus,
        memory_mib=memory,
        disk_mib=20 * GIB,
        cpu_policy=CpuPolicy.DEDICATED,
        thread_policy=policy,
        isolate_emulator_thread=rng.random() < 0.25,
        numa_cells=cells,
    )


def workload(count: int, rng: random.Random) -> list[Request]:
    out: list[Request] = []
    group = 0
    while len(out) < count:
        roll = rng.random()
        if roll < 0.7:
            out.append(shared_vm(f"bench/s{len(out)}", rng))
        elif roll < 0.9:
            out.append(dedicated_vm(f"bench/d{len(out)}", rng))
        else:
            g = ServerGroup(f"aa{group}", GroupPolicy.ANTI_AFFINITY)
            group += 1
            for _ in range(5):
                out.append(replace(shared_vm(f"bench/g{len(out)}", rng), group=g))
    return out[:count]


def preload(hosts: list[HostSnapshot], rng: random.Random) -> PlacementState:
    """20 VMs per host, claimed directly on their host (as a rebuild from a listing would)."""
    state = PlacementState.rebuild(hosts, [], defaults=RATIOS)
    for host in hosts:
        for i in range(20):
            request = (dedicated_vm if i % 5 == 0 else shared_vm)(f"pre/{host.name}-{i}", rng)
            request = replace(request, thread_policy=ThreadPolicy.PREFER, numa_cells=())
            fit = None
            if request.numa_aware:
                got = numa.fit(
                    host=host,
                    usages=state.usage(host.name).cells,
                    request=request,
                    ratios=state.inventory(host.name).ratios,
                )
                if not isinstance(got, numa.NumaFit):
                    continue
                fit = got
            state.claim(scheduler.claim_for(request, host=host.name, fit=fit))
    return state


def in_namespaces(requests: list[Request], namespaces: int) -> list[Request]:
    """The requests spread round-robin over `namespaces` namespaces ns0..ns<N-1>."""
    return [
        replace(r, name=f"ns{i % namespaces}/{r.name.split('/', 1)[1]}")
        for i, r in enumerate(requests)
    ]


def place_all(
    state: PlacementState,
    requests: list[Request],
    limits: dict[str, quota.Quota] | None,
    ledger: quota.Ledger,
) -> tuple[list[float], int]:
    """Place every request, with each namespace's quota checked first when `limits` is
    given (`ledger` following `state`); per-decision latencies and how many were placed."""
    latencies = []
    placed = 0
    for request in requests:
        t0 = time.perf_counter()
        refused = None
        if limits is not None:
            namespace = quota.namespace_of(request.name)
            used = ledger.used(namespace, besides=request.name)
            wanted = quota.requested(request)
            refused = quota.admit((limits[namespace],), used=used, wanted=wanted)
        decision = scheduler.place(state, request) if refused is None else None
        latencies.append(time.perf_counter() - t0)
        placed += isinstance(decision, Decision)
    return latencies, placed


def quotas_on_and_off(size: int, vms: int, namespaces: int, seed: int, rounds: int) -> None:
    """Off and on in turn, `rounds` times each: the best round of each is compared (the
    machine's other load only ever slows a round down)."""
    names = [f"ns{i}" for i in range(namespaces)]
    generous = {VCPUS: 1_000_000, MEMORY: 1 << 40, quota.VMS: 100_000, quota.LOCAL_DISK: 1 << 40}
    limits = {ns: quota.Quota("compute", generous) for ns in names}
    results: dict[str, list[tuple[float, list[float], int]]] = {"off": [], "on": []}
    for _ in range(rounds):
        for label, given in (("off", None), ("on", limits)):
            rng = random.Random(seed)
            hosts = [make_host(f"h{i}") for i in range(size)]
            state = preload_in(hosts, rng, namespaces)
            requests = in_namespaces(workload(vms, rng), namespaces)
            ledger = quota.Ledger()
            if given is not None:
                ledger.follow(state)  # as the controller does once, at start-up
            gc.collect()
            gc.freeze()
            wall = time.perf_counter()
            latencies, placed = place_all(state, requests, given, ledger)
            wall = time.perf_counter() - wall
            gc.unfreeze()
            results[label].append((len(requests) / wall, latencies, placed))
    off, on = (max(results[label], key=lambda r: r[0]) for label in ("off", "on"))
    assert off[2] == on[2], "generous quotas must place the same VMs"
    print(
        f"quotas at hosts={size}, {namespaces} namespaces, {vms} VMs (placed {on[2]} both "
        f"ways; best of {rounds} rounds each)"
    )
    for label, (rate, latencies, _) in (("off", off), ("on", on)):
        print(
            f"  quotas {label:>3}: {rate:8.0f} decisions/s  "
            f"p50 {percentile(latencies, 50) * 1e3:6.3f} ms  "
            f"p99 {percentile(latencies, 99) * 1e3:6.3f} ms"
        )
    print(f"  quotas on are {(off[0] / on[0] - 1) * 100:+.1f}% slower (target: at most 10%)")
    sys.stdout.flush()


VCPUS, MEMORY = quota.VCPUS, quota.MEMORY


def preload_in(hosts: list[HostSnapshot], rng: random.Random, namespaces: int) -> PlacementState:
    """`preload`, its VMs spread over the namespaces as the workload's are."""
    state = preload(hosts, rng)
    claims = list(state.claims().values())
    for i, claim in enumerate(claims):
        state.release(claim.vm)
        state.claim(replace(claim, vm=f"ns{i % namespaces}/{claim.vm.split('/', 1)[1]}"))
    return state


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def naive(hosts: list[HostSnapshot], state: PlacementState, requests: list[Request]) -> list[float]:
    """Full recount (rebuild every host's usage from every claim) + full scan, per decision."""
    claims = list(state.claims().values())
    latencies = []
    for request in requests:
        started = time.perf_counter()
        fresh = PlacementState.rebuild(hosts, claims, defaults=RATIOS)
        decision = scheduler.select_host_exhaustive(fresh, request)
        latencies.append(time.perf_counter() - started)
        if isinstance(decision, Decision):
            claims.append(decision.claim)
    return latencies


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(size: int, vms: int, naive_decisions: int, seed: int) -> None:
    rng = random.Random(seed)
    hosts = [make_host(f"h{i}") for i in range(size)]
    started = time.perf_counter()
    state = preload(hosts, rng)
    built = time.perf_counter() - started
    requests = workload(vms, rng)
    gc.collect()
    gc.freeze()  # the pre-loaded state is long-lived; keep it out of young collections
    latencies = []
    placed = failed = 0
    wall = time.perf_counter()
    for request in requests:
        t0 = time.perf_counter()
        decision = scheduler.place(state, request)
        latencies.append(time.perf_counter() - t0)
        if isinstance(decision, Decision):
            placed += 1
        else:
            failed += 1
    wall = time.perf_counter() - wall
    rate = len(requests) / wall
    naive_lat = naive(hosts, state, workload(naive_decisions, random.Random(seed + 1)))
    naive_mean = statistics.fmean(naive_lat)
    fast_mean = statistics.fmean(latencies)
    print(
        f"hosts={size:>6}  preload={len(state.claims()) - placed:>7} VMs in {built:5.1f}s  "
        f"placed={placed} unplaceable={failed}"
    )
    print(
        f"  engine: {rate:8.0f} decisions/s  p50 {percentile(latencies, 50) * 1e3:6.3f} ms  "
        f"p99 {percentile(latencies, 99) * 1e3:6.3f} ms  max {max(latencies) * 1e3:6.2f} ms  "
        f"peak RSS so far {rss_mib():.0f} MiB"
    )
    print(
        f"  naive : {1 / naive_mean:8.1f} decisions/s  "
        f"p50 {percentile(naive_lat, 50) * 1e3:6.1f} ms  "
        f"p99 {percentile(naive_lat, 99) * 1e3:6.1f} ms  (measured on {len(naive_lat)} decisions, "
        f"per-decision mean extrapolated)"
    )
    print(f"  speed-up engine/naive per decision: {naive_mean / fast_mean:.0f}x")
    gc.unfreeze()
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--naive", type=int, default=20, help="naive decisions per size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--namespaces", type=int, default=1000, help="for the quota figures (0: skip them)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="quota figures: rounds of each")
    args = parser.parse_args(argv)
    total = time.perf_counter()
    print("placement benchmark (kubevisor.core.placement, single process, pure Python)")
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        run(size, args.vms, args.naive, args.seed)
    if args.namespaces:
        quotas_on_and_off(sizes[0], args.vms, args.namespaces, args.seed, args.rounds)
    print(f"total {time.perf_counter() - total:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
