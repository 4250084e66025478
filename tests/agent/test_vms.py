"""The VMs bound to the agent's host (`agent.vms.BoundVms`), as its watch fills it."""

from __future__ import annotations

from typing import Any

from kubevisor.agent.vms import BoundVms, key_of


def vm(name: str, uid: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "uid": uid}}


def test_a_vm_that_left_keeps_its_uid_until_its_domain_is_gone() -> None:
    vms = BoundVms()
    key = vms.remember(vm("a", "uid-a"))
    assert (key, key_of(vm("a", "uid-a"))) == ("ns/a", "ns/a")
    assert vms.is_bound("uid-a") and list(vms) == ["ns/a"] and len(vms) == 1
    vms.unbound(key)
    assert vms.get(key) is None and not vms.is_bound("uid-a")
    assert (vms.uid(key), vms.key("uid-a")) == ("uid-a", "ns/a"), "its domain is still here"
    assert vms.known_uids() == {"uid-a"}
    vms.forget(key)
    assert (vms.uid(key), vms.key("uid-a"), vms.known_uids()) == (None, None, set())


def test_a_new_object_under_the_same_name_makes_the_old_domain_a_stray() -> None:
    vms = BoundVms()
    vms.remember(vm("a", "old"))
    vms.remember(vm("a", "new"))
    assert vms.key("old") is None and vms.key("new") == "ns/a"
    assert vms.known_uids() == {"new"}


def test_a_listing_replaces_the_bound_vms_but_not_the_uids_still_to_remove() -> None:
    vms = BoundVms()
    vms.remember(vm("a", "uid-a"))
    vms.replace([vm("b", "uid-b")])
    assert list(vms) == ["ns/b"]
    assert [obj["metadata"]["name"] for obj in vms.objects()] == ["b"]
    assert vms.known_uids() == {"uid-a", "uid-b"}, "a's domain is the reconciler's to remove"
