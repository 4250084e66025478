"""Host pools per namespace through the whole stack (core/placement/pools.py): a namespace
limited to one host never lands on the other, a host reserved for one namespace takes no
VM of another, and the Unschedulable message counts the hosts each excludes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from builders import tiny_vm as vm
from harness import eventually
from kubevisor.api.wire import HOST_SELECTOR_ANNOTATION
from stacks import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]

POOL = "e2e-pool"
"""The host label the test's pools select on: "a" on the first host, "b" on the second."""


def scheduled_message(stack: Stack, namespace: str, name: str) -> str:
    status = (stack.get("vm", name, namespace) or {}).get("status") or {}
    found = [c for c in status.get("conditions") or [] if c["type"] == "Scheduled"]
    return str(found[0].get("message")) if status.get("phase") == "Unschedulable" else ""


@pytest.fixture
def pools(stack: Stack) -> Iterator[tuple[str, str]]:
    """The two hosts labelled pool "a" and "b"; labels and reservations removed after."""
    first, second = (h.name for h in stack.hosts)
    for host, pool in ((first, "a"), (second, "b")):
        stack.kubectl("label", "hvh", host, f"{POOL}={pool}", "--overwrite")
    try:
        yield first, second
    finally:
        for host in (first, second):
            stack.kubectl("label", "hvh", host, f"{POOL}-")
            stack.kubectl(
                "patch", "hvh", host, "--type=merge", "-p", '{"spec":{"reservedFor":null}}'
            )


@pytest.fixture
def reserved_namespace(stack: Stack, namespace: str) -> Iterator[str]:
    """A second namespace beside `namespace`, its VMs deleted (and waited for) after."""
    name = f"{namespace[:50]}-r"
    stack.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        stack.kubectl("delete", "vm", "--all", "-n", name, "--wait=true", "--timeout=120s")
        stack.kubectl("delete", "namespace", name, "--wait=false")


def ready_reasons(message: str | None) -> str | None:
    """An Unschedulable message without its count of hosts and of hosts not ready: other
    modules' hosts may linger NotReady while the controller deletes them."""
    head, found, reasons = (message or "").partition(" hosts fit: ")
    if not found or not head.startswith("0/"):
        return None
    return ", ".join(r for r in reasons.split(", ") if not r.endswith(" not ready"))


def wait_message(stack: Stack, namespace: str, name: str, expected: str) -> None:
    """`expected` without the count: its reasons for the hosts that are Ready."""
    eventually(
        lambda: ready_reasons(scheduled_message(stack, namespace, name)) == expected,
        what=f"vm {name}'s Unschedulable message to give {expected!r} for the Ready hosts "
        f"(is {scheduled_message(stack, namespace, name)!r})",
    )


def running_on(stack: Stack, namespace: str, names: list[str], host: str, other: str) -> None:
    """The VMs run on `host`, and `other` has no domain of theirs."""
    for name in names:
        running = stack.wait_phase(namespace, name, "Running", timeout=120)
        assert running["status"]["host"] == host, name
        assert running["metadata"]["uid"] not in stack.domains(other), name


def test_pools_and_reserved_hosts(
    stack: Stack, pools: tuple[str, str], namespace: str, reserved_namespace: str
) -> None:
    first, second = pools
    stack.kubectl("annotate", "namespace", namespace, f"{HOST_SELECTOR_ANNOTATION}={POOL}=a")
    # A VM no host takes: its message shows the controller has seen the pool (a VM created
    # in the moment after a pool changes may be placed by the old one: README).
    stack.apply(namespace, vm("nowhere", placement={"hostSelector": {POOL: "nowhere"}}))
    wait_message(
        stack,
        namespace,
        "nowhere",
        f"1 didn't match host selector {POOL}=nowhere, "
        f"1 outside namespace {namespace}'s host pool {POOL}=a",
    )
    # Spreading would put every other VM on the second host.
    pooled = [f"pooled-{i}" for i in range(3)]
    stack.apply(namespace, *(vm(name) for name in pooled))
    running_on(stack, namespace, pooled, first, second)

    # The second host reserved for the other namespace, whose VM it takes; the pool lifted,
    # the waiting VM is looked at again (the Namespace's watch event): the reservation now
    # keeps it from the second host, as it does the namespace's new VMs.
    stack.kubectl(
        "patch",
        "hvh",
        second,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"reservedFor": [reserved_namespace]}}),
    )
    stack.apply(reserved_namespace, vm("theirs", placement={"hostSelector": {POOL: "b"}}))
    stack.kubectl("annotate", "namespace", namespace, f"{HOST_SELECTOR_ANNOTATION}-")
    wait_message(
        stack,
        namespace,
        "nowhere",
        f"1 didn't match host selector {POOL}=nowhere, "
        f"1 reserved for namespace {reserved_namespace}",
    )
    running_on(stack, reserved_namespace, ["theirs"], second, first)
    unpooled = [f"unpooled-{i}" for i in range(2)]
    stack.apply(namespace, *(vm(name) for name in unpooled))
    running_on(stack, namespace, unpooled, first, second)
