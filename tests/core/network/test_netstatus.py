"""A Network's status (core.network.netstatus): Ready first-match, conflicts, the wire."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address

import pytest

from kubevisor.core.network import netstatus
from kubevisor.core.network.ipam import Reason, Refusal
from kubevisor.core.network.netstatus import Inputs

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def inputs(**changes: object) -> Inputs:
    base: dict[str, object] = {
        "generation": 2,
        "overlay": True,
        "used": 3,
        "free": 8,
        "vni": 4096,
        "ports": {"h2": IPv4Address("10.0.0.12"), "h1": IPv4Address("10.0.0.11")},
        "users": ["default/a"],
        "deleting": False,
    }
    base.update(changes)
    return Inputs(**base)  # type: ignore[arg-type]


def ready(status: dict[str, object]) -> tuple[str, str, str]:
    (found,) = [c for c in status["conditions"] if c["type"] == "Ready"]  # type: ignore[attr-defined]
    return found["status"], found["reason"], found["message"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, ("True", "Ready", "3 of 11 addresses in use"), id="ready-with-numbers"),
        pytest.param(
            {"deleting": True, "users": [f"default/vm{i}" for i in range(12)]},
            (
                "False",
                "InUse",
                "deletion waits for the 12 VMs that use it: default/vm0, default/vm1, "
                "default/vm2, default/vm3, default/vm4, default/vm5, default/vm6, "
                "default/vm7, default/vm8, default/vm9 and 2 more",
            ),
            id="deleting-in-use-lists-the-first-ten",
        ),
        pytest.param(
            {"deleting": True, "users": []},
            ("False", "Deleting", "no VM uses it; deleting"),
            id="deleting-unused",
        ),
        pytest.param(
            {"vni": Refusal(Reason.VNI_TAKEN, "VNI 7 is network team/red's")},
            ("False", "VniTaken", "VNI 7 is network team/red's"),
            id="vni-taken",
        ),
        pytest.param(
            {"deleting": True, "vni": Refusal(Reason.VNI_TAKEN, "VNI 7 is network team/red's")},
            ("False", "InUse", "deletion waits for the 1 VMs that use it: default/a"),
            id="deleting-wins-over-vni",
        ),
    ],
)
def test_ready_says_whether_vms_can_be_placed_on_it(
    changes: dict[str, object], expected: tuple[str, str, str]
) -> None:
    assert ready(netstatus.network_status(inputs(**changes), current=None, now=NOW)) == expected


def test_the_wire_status_carries_counts_sorted_ports_and_the_vni_of_an_overlay_only() -> None:
    status = netstatus.network_status(inputs(), current=None, now=NOW)
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "used": 3,
        "free": 8,
        "vni": 4096,
        "observedGeneration": 2,
        "dhcpPorts": [
            {"host": "h1", "ipAddress": "10.0.0.11"},
            {"host": "h2", "ipAddress": "10.0.0.12"},
        ],
    }
    provider = netstatus.network_status(inputs(overlay=False, vni=None), current=None, now=NOW)
    assert "vni" not in provider


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    first = netstatus.network_status(inputs(), current=None, now=NOW)
    later = datetime(2024, 5, 1, 13, 0, 0, tzinfo=UTC)
    again = netstatus.network_status(inputs(used=4, free=7), current=first, now=later)
    times = {c["type"]: c["lastTransitionTime"] for c in again["conditions"]}  # type: ignore[attr-defined]
    assert times == {"Ready": "2024-05-01T12:00:00Z", "AddressConflict": "2024-05-01T12:00:00Z"}
