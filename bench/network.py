"""Address allocation benchmark: allocations per second at 10,000 addresses in one Network.

    .venv/bin/python bench/network.py [--addresses 10000] [--repeat 3]

One Network (10.0.0.0/16, gateway 10.0.0.1, one allocation pool of exactly --addresses
addresses starting at 10.0.0.10, a few reserved addresses inside it) and the pure
allocator of the controller (`core.network.ipam.AddressPool`):

- fill: allocate every address of the pool, from empty to full, one VM interface each;
- last tenth: the allocations from 90% to 100% full (where a scan would cost the most);
- churn: at 99% full, release a random owner and allocate a new one, repeatedly;
- rebuild: a pool rebuilt from the full pool's records (a controller restart).

The naive reference, measured in the same run on the same states: a pool that looks for
the first free address by walking its address list from the start each time (what a
first version would do). It runs on fewer operations (the last tenth, 1,000 churn
rounds) and is compared per operation. Prints figures; it is not a timed test. Target:
>= 5,000 allocations/s over the whole fill.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable
from functools import partial
from ipaddress import IPv4Address, IPv4Network

from kubevisor.core.network import ipam
from kubevisor.core.network.ipam import AddressPool, Owner, Refusal

SUBNET = IPv4Network("10.0.0.0/16")
GATEWAY = IPv4Address("10.0.0.1")
FIRST = IPv4Address("10.0.0.10")
TARGET = 5_000


class NaivePool:
    """The reference: a list of every address the pool offers, walked from the start."""

    def __init__(self, candidates: list[IPv4Address]) -> None:
        self.candidates = candidates
        self.by_owner: dict[Owner, IPv4Address] = {}
        self.taken: set[IPv4Address] = set()

    def allocate(self, owner: Owner) -> IPv4Address | None:
        for address in self.candidates:
            if address not in self.taken:
                self.taken.add(address)
                self.by_owner[owner] = address
                return address
        return None

    def release(self, owner: Owner) -> None:
        self.taken.discard(self.by_owner.pop(owner))


def reserved(size: int) -> list[IPv4Address]:
    """Ten reserved addresses spread through the pool (they are skipped, not counted)."""
    return [FIRST + (size * k) // 10 + 3 for k in range(10)]


def make_pool(size: int) -> AddressPool:
    """A pool offering exactly `size` addresses."""
    extra = len(reserved(size))
    return AddressPool(
        name="bench/blue",
        subnet=SUBNET,
        pools=[(FIRST, FIRST + size + extra - 1)],
        gateway=GATEWAY,
        reserved=reserved(size),
    )


def naive_pool(size: int) -> NaivePool:
    skip = set(reserved(size))
    return NaivePool([a for a in (FIRST + i for i in range(size + len(skip))) if a not in skip])


def owner(i: int) -> Owner:
    return Owner(f"bench/vm-{i}", "eth0")


def timed(work: Callable[[], int]) -> tuple[float, int]:
    """Seconds `work` took and the operations it reported, with the GC off."""
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        operations = work()
        return time.perf_counter() - started, operations
    finally:
        gc.enable()


def fill(pool: AddressPool, start: int, stop: int) -> int:
    for i in range(start, stop):
        if isinstance(pool.allocate(owner(i)), Refusal):
            raise SystemExit(f"refused at {i}")
    return stop - start


def fill_naive(pool: NaivePool, start: int, stop: int) -> int:
    for i in range(start, stop):
        if pool.allocate(owner(i)) is None:
            raise SystemExit(f"naive refused at {i}")
    return stop - start


def prefilled_naive(size: int, count: int) -> NaivePool:
    """The naive pool holding the first `count` addresses, built without timing."""
    pool = naive_pool(size)
    for i, address in enumerate(pool.candidates[:count]):
        pool.taken.add(address)
        pool.by_owner[owner(i)] = address
    return pool


def churn(pool: AddressPool | NaivePool, live: list[int], rounds: int, seed: int) -> int:
    rng = random.Random(seed)
    next_id = 10_000_000
    for _ in range(rounds):
        slot = rng.randrange(len(live))
        pool.release(owner(live[slot]))
        live[slot] = next_id
        pool.allocate(owner(next_id))
        next_id += 1
    return rounds


def rebuild(pool: AddressPool, records: list[tuple[Owner, IPv4Address]]) -> int:
    if ipam.rebuild(pool, records):
        raise SystemExit("conflicts in a rebuild of a pool's own records")
    return len(records)


def rate(seconds: float, operations: int) -> float:
    return operations / seconds if seconds > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addresses", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size: int = args.addresses
    tenth = size // 10
    nearly = size - size // 100

    fills: list[float] = []
    tails: list[float] = []
    tails_naive: list[float] = []
    churns: list[float] = []
    churns_naive: list[float] = []
    rebuilds: list[float] = []
    for run in range(args.repeat):
        pool = make_pool(size)
        assert pool.capacity == size
        fills.append(rate(*timed(partial(fill, pool, 0, size))))
        records = list(pool.assignments().items())

        part = make_pool(size)
        fill(part, 0, size - tenth)
        tails.append(rate(*timed(partial(fill, part, size - tenth, size))))
        naive = prefilled_naive(size, size - tenth)
        tails_naive.append(rate(*timed(partial(fill_naive, naive, size - tenth, size))))

        busy = make_pool(size)
        fill(busy, 0, nearly)
        live = list(range(nearly))
        churns.append(rate(*timed(partial(churn, busy, live, size, run))))
        naive_busy = prefilled_naive(size, nearly)
        live = list(range(nearly))
        churns_naive.append(rate(*timed(partial(churn, naive_busy, live, 1_000, run))))

        copy = make_pool(size)
        seconds, _ = timed(partial(rebuild, copy, records))
        rebuilds.append(seconds)
        assert dict(copy.assignments()) == dict(pool.assignments())

    median = statistics.median
    print(
        f"network bench/blue: {SUBNET}, one pool of {size:,} addresses "
        f"({len(reserved(size))} reserved inside it), median of {args.repeat} runs"
    )
    fill_rate = median(fills)
    verdict = "meets" if fill_rate >= TARGET else "MISSES"
    print(
        f"  fill 0 -> {size:,}:               {fill_rate:>12,.0f} allocations/s "
        f"({verdict} the target of {TARGET:,}/s)"
    )
    print(
        f"  last tenth ({size - tenth:,} -> {size:,}):  {median(tails):>12,.0f} allocations/s; "
        f"naive {median(tails_naive):,.0f}/s; ratio {median(tails) / median(tails_naive):,.0f}x"
    )
    print(
        f"  churn at 99% full:             {median(churns):>12,.0f} release+allocate/s; "
        f"naive {median(churns_naive):,.0f}/s; ratio {median(churns) / median(churns_naive):,.0f}x"
    )
    print(f"  rebuild from {size:,} records:   {median(rebuilds) * 1000:>12,.1f} ms")


if __name__ == "__main__":
    main()
