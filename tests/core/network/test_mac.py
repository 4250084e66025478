"""MAC addresses of VM interfaces (core.network.mac): derived once, kept, unique."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from kubevisor.api.addresses import MAC_PATTERN
from kubevisor.core.network import mac
from kubevisor.core.network.ipam import Owner, Reason

UID = "0b7f4c2e-0000-4000-8000-000000000001"


@given(st.uuids().map(str), st.from_regex(r"\A[a-z0-9]{1,15}\Z"))
def test_derived_macs_are_locally_administered_unicast_in_the_api_grammar(
    uid: str, interface: str
) -> None:
    derived = mac.derived(uid, interface)
    assert re.fullmatch(MAC_PATTERN, derived)
    first = int(derived[:2], 16)
    assert first & 0x01 == 0, "unicast"
    assert first & 0x02 == 0x02, "locally administered"
    assert mac.derived(uid, interface) == derived, "the same every time"


def test_derived_macs_differ_by_vm_and_interface() -> None:
    macs = {mac.derived(uid, name) for uid in (UID, UID[:-1] + "2") for name in ("eth0", "eth1")}
    assert len(macs) == 4
    assert mac.derived(UID, "eth0") == "02:" + mac.derived(UID, "eth0")[3:]


def test_the_recorded_mac_wins_over_the_spec_and_derivation() -> None:
    recorded = "02:aa:bb:cc:dd:ee"
    assert mac.chosen(recorded=recorded, requested="02:00:00:00:00:01", uid=UID, interface="e") == (
        recorded
    )
    assert mac.chosen(recorded=None, requested="02:00:00:00:00:01", uid=UID, interface="e") == (
        "02:00:00:00:00:01"
    )
    assert mac.chosen(recorded=None, requested=None, uid=UID, interface="e") == mac.derived(
        UID, "e"
    )


def test_a_mac_has_one_owner_in_the_cluster() -> None:
    registry = mac.MacRegistry()
    a, b = Owner("ns/a", "eth0"), Owner("other/b", "eth0")
    assert registry.claim(a, "02:00:00:00:00:01") is None
    assert registry.claim(a, "02:00:00:00:00:01") is None
    refused = registry.claim(b, "02:00:00:00:00:01")
    assert refused is not None and refused.reason == Reason.DUPLICATE_MAC
    assert refused.message == "MAC address 02:00:00:00:00:01 is already ns/a eth0's in the cluster"
    assert registry.held_by(b) is None
    assert registry.release(a) == "02:00:00:00:00:01"
    assert registry.claim(b, "02:00:00:00:00:01") is None and len(registry) == 1


def test_rebuild_reports_the_later_of_two_owners_of_one_mac() -> None:
    registry = mac.MacRegistry()
    a, b, c = Owner("ns/a", "eth0"), Owner("ns/b", "eth0"), Owner("ns/c", "eth0")
    conflicts = mac.rebuild(
        registry, [(a, "02:00:00:00:00:01"), (b, "02:00:00:00:00:01"), (c, "02:00:00:00:00:02")]
    )
    assert [(x.owner, x.mac) for x in conflicts] == [(b, "02:00:00:00:00:01")]
    assert dict(registry.assignments()) == {a: "02:00:00:00:00:01", c: "02:00:00:00:00:02"}
