"""PCI passthrough claims (placement.pci through the scheduler): which devices, NUMA-local
first, never one device twice, and the claim's way back from the VM status."""

from __future__ import annotations

import pytest

from kubevisor.core.placement import pci, scheduler
from kubevisor.core.placement.model import Claim, NumaFit, PciClaim, PciDevice, Rejection
from kubevisor.core.placement.scheduler import Decision, NoFit
from kubevisor.core.placement.state import ClaimConflict, PlacementState

from .builders import make_host, make_request

# Two VFs on cell 0, two on cell 1, one without a NUMA cell.
DEVICES = (
    PciDevice("0000:3b:02.0", "vf", 0),
    PciDevice("0000:3b:02.1", "vf", 0),
    PciDevice("0000:af:02.0", "vf", 1),
    PciDevice("0000:af:02.1", "vf", 1),
    PciDevice("0000:00:05.0", "vf", None),
    PciDevice("0000:d8:00.0", "gpu", 1),
)


def addresses(found: tuple[PciClaim, ...] | Rejection) -> list[str]:
    assert not isinstance(found, Rejection), found
    return [claim.address for claim in found]


@pytest.mark.parametrize(
    ("local", "count", "in_use", "expected"),
    [
        pytest.param((1,), 2, (), ["0000:af:02.0", "0000:af:02.1"], id="local-cell-first"),
        pytest.param(
            (1,), 3, (), ["0000:af:02.0", "0000:af:02.1", "0000:00:05.0"], id="then-no-cell"
        ),
        pytest.param(
            (1,),
            2,
            ("0000:af:02.0",),
            ["0000:af:02.1", "0000:00:05.0"],
            id="claimed-devices-skipped",
        ),
        pytest.param(
            (0,),
            4,
            (),
            ["0000:3b:02.0", "0000:3b:02.1", "0000:00:05.0", "0000:af:02.0"],
            id="remote-cell-last",
        ),
        pytest.param((), 1, (), ["0000:00:05.0"], id="no-fit-prefers-cell-less-devices"),
    ],
)
def test_assign_orders_numa_local_first(
    local: tuple[int, ...], count: int, in_use: tuple[str, ...], expected: list[str]
) -> None:
    host = make_host(pci_devices=DEVICES)
    found = pci.assign(
        host=host,
        in_use=frozenset(in_use),
        request=make_request(pci=(("vf", count),)),
        local_cells=local,
    )
    assert addresses(found) == expected


def test_assign_names_the_alias_it_lacks() -> None:
    host = make_host(pci_devices=DEVICES)
    found = pci.assign(
        host=host, in_use=frozenset(), request=make_request(pci=(("vf", 1), ("gpu", 2)))
    )
    assert isinstance(found, Rejection)
    assert found.summary == 'insufficient PCI devices "gpu"'
    assert (found.need, found.free, found.unit) == (2, 1, "devices")


def test_dedicated_guest_gets_devices_on_its_cell() -> None:
    # Cell 0's dedicated CPUs are taken, so the guest lands on cell 1: so do its VFs.
    host = make_host(dedicated="all", pci_devices=DEVICES)
    state = PlacementState.rebuild([host], [])
    first = scheduler.place(state, make_request("default/a", vcpus=8, dedicated=True))
    assert isinstance(first, Decision) and first.numa is not None
    taken_cell = first.numa.cells[0].host_cell
    second = scheduler.place(
        state, make_request("default/b", vcpus=4, dedicated=True, pci=(("vf", 2),))
    )
    assert isinstance(second, Decision) and second.numa is not None
    cell = second.numa.cells[0].host_cell
    assert cell != taken_cell
    local = {d.address for d in DEVICES if d.numa_cell == cell and d.alias == "vf"}
    assert {c.address for c in second.numa.pci} == local
    assert state.usage("h1").pci == frozenset(local)


def test_shared_guest_claims_devices_without_numa_cells() -> None:
    state = PlacementState.rebuild([make_host(pci_devices=DEVICES)], [])
    decision = scheduler.place(state, make_request(pci=(("gpu", 1),)))
    assert isinstance(decision, Decision) and decision.numa is not None
    assert decision.numa.cells == ()
    assert decision.numa.pci == (PciClaim("gpu", "0000:d8:00.0"),)
    assert decision.claim.pcpus == 0


def test_burst_never_hands_out_a_device_twice() -> None:
    hosts = [make_host("h1", pci_devices=DEVICES), make_host("h2", pci_devices=DEVICES[:2])]
    state = PlacementState.rebuild(hosts, [])
    placed = [
        scheduler.place(state, make_request(f"default/vm{i}", pci=(("vf", 1),))) for i in range(8)
    ]
    ok = [d for d in placed if isinstance(d, Decision)]
    assert len(ok) == 7  # 5 VFs on h1, 2 on h2
    taken = [(d.host, c.address) for d in ok if d.numa for c in d.numa.pci]
    assert len(taken) == len(set(taken)) == 7
    last = placed[-1]
    assert isinstance(last, NoFit)
    assert 'insufficient PCI devices "vf"' in last.message
    # Releasing one VM frees its device for the next.
    state.release(ok[0].request.name)
    assert isinstance(
        scheduler.place(state, make_request("default/again", pci=(("vf", 1),))), Decision
    )


def test_state_refuses_a_claim_on_a_device_in_use_or_unknown() -> None:
    state = PlacementState.rebuild([make_host(pci_devices=DEVICES)], [])
    fit = NumaFit(cells=(), pci=(PciClaim("vf", "0000:3b:02.0"),))
    state.claim(Claim(vm="a", host="h1", numa=fit))
    with pytest.raises(ClaimConflict, match="already in use"):
        state.claim(Claim(vm="b", host="h1", numa=fit))
    unknown = NumaFit(cells=(), pci=(PciClaim("vf", "0000:99:00.0"),))
    with pytest.raises(ClaimConflict, match="lacks"):
        state.claim(Claim(vm="c", host="h1", numa=unknown))
