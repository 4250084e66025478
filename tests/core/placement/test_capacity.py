"""Placement's capacity arithmetic (placement.capacity)."""

from __future__ import annotations

import pytest

from kubevisor.core.placement import capacity
from kubevisor.core.placement.capacity import AllocationRatios, Inventory
from kubevisor.core.placement.model import RatioOverrides

from .builders import GIB, make_host


@pytest.mark.parametrize(
    ("inv", "used", "amount", "fits"),
    [
        pytest.param(Inventory(8, 0, 16.0), 120, 8, True, id="api-ref-example-8-at-16-gives-128"),
        pytest.param(Inventory(8, 0, 16.0), 121, 8, False, id="one-over-capacity"),
        pytest.param(Inventory(8, 0, 16.0), 0, 9, False, id="max-unit-is-physical-total"),
        pytest.param(Inventory(8, 2, 1.0), 0, 6, True, id="reserved-is-subtracted"),
        pytest.param(Inventory(8, 2, 1.0), 0, 7, False, id="reserved-is-not-usable"),
        pytest.param(Inventory(0, 0, 1.0), 0, 0, True, id="zero-amount-always-fits"),
    ],
)
def test_inventory_fits(inv: Inventory, used: int, amount: int, fits: bool) -> None:
    assert inv.fits(used=used, amount=amount) is fits


def test_capacity_formula_truncates_like_placement() -> None:
    assert Inventory(total=3, reserved=0, ratio=1.5).capacity == 4


def test_host_ratios_override_cluster_defaults() -> None:
    host = make_host(ratios=RatioOverrides(cpu=8.0), dedicated="half", reserved_memory_mib=GIB)
    inv = capacity.inventory(host, AllocationRatios(cpu=4.0, memory=1.5))
    assert inv.ratios == AllocationRatios(cpu=8.0, memory=1.5, disk=1.0)
    assert inv.vcpu.capacity == 8 * 8  # shared half of 16 CPUs, overcommitted
    assert inv.pcpu.capacity == 8 and inv.pcpu.ratio == 1.0  # never overcommitted
    assert inv.memory.capacity == int((64 * GIB - GIB) * 1.5)
    assert inv.memory.max_unit == 64 * GIB


def test_dedicated_cpus_are_not_shared_capacity() -> None:
    inv = capacity.inventory(make_host(dedicated="all"), AllocationRatios())
    assert inv.vcpu.capacity == 0
    assert inv.pcpu.capacity == 16


def test_a_host_reserving_more_than_it_has_offers_nothing_and_says_so() -> None:
    host = make_host(reserved_memory_mib=80 * GIB, reserved_vcpus=16)
    inv = capacity.inventory(host, AllocationRatios())
    assert inv.memory.capacity == 0, "never a negative capacity (-16Gi)"
    assert inv.vcpu.capacity == 0
    assert capacity.warnings(host) == (
        "host h1 reserves 80Gi of its 64Gi memory (spec.reserved): it offers none",
        "host h1 reserves 16 of its 16 shared CPUs (spec.reserved): it offers none",
    )
    assert capacity.warnings(make_host(reserved_memory_mib=GIB)) == ()
