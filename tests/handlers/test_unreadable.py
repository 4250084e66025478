"""Objects the controller cannot understand fail alone (issue 16, point 6): a host or VM
that the model refuses, or that placement cannot evaluate, gets a condition saying why,
and every other object is handled as if it were not there. The real API server's side
(objects stored before the schema's rules) is in test_unreadable_apiserver.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from kubevisor.kube.client import Object

from .fake_cluster import NAMESPACE, VM_FINALIZER, Cluster, FakeKube, host, vm


def condition(status: dict[str, Any], type_: str) -> tuple[str, str, str]:
    (found,) = [c for c in status.get("conditions") or [] if c["type"] == type_]
    return found["status"], found["reason"], found["message"]


def _spec(**fields: Any) -> Callable[[Object], None]:
    return lambda obj: obj["spec"].update(fields)


def _no_cells_and_cpus(count: int) -> Callable[[Object], None]:
    def edit(obj: Object) -> None:
        obj["status"]["numaCells"] = []
        obj["status"]["capacity"]["cpu"] = count

    return edit


BAD_HOSTS = [
    pytest.param(
        _spec(allocationRatios={"cpu": 1e308}),
        "spec.allocationRatios.cpu: Input should be less than or equal to 100",
        id="ratio-1e308",
    ),
    pytest.param(
        _spec(cpuDedicatedSet="0-4294967295"),
        "spec.cpuDedicatedSet: '0-4294967295': must be a list of CPU numbers and ranges "
        "such as 0-3,8,10-11, at most 64 entries",
        id="cpu-set-of-four-billion",
    ),
    pytest.param(
        _spec(cpuSharedSet="7-2"),
        "spec.cpuSharedSet: '7-2': range 7-2 runs backwards; each range must run upwards, "
        "e.g. 2-7 (not 7-2)",
        id="cpu-set-backwards",
    ),
    pytest.param(
        _spec(reserved={"memory": "1e999999999.0"}),
        "spec.reserved.memory: '1e999999999.0' must be a size such as 512Mi or 2Gi: a "
        "number with an optional suffix (Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E, or an "
        "exponent such as e9)",
        id="reserved-memory-huge-exponent",
    ),
    pytest.param(
        # Valid for the model (the status schema bounds no count); without cells the
        # CPUs would be expanded into a set of 10**12 numbers.
        _no_cells_and_cpus(10**12),
        "status.capacity.cpu: Input should be less than or equal to 8192",
        id="a-trillion-cpus-without-cells",
    ),
]


@pytest.mark.parametrize(("spoil", "why"), BAD_HOSTS)
def test_a_host_the_controller_cannot_read_says_why_and_the_others_keep_placing(
    cluster: Cluster, spoil: Callable[[Object], None], why: str
) -> None:
    bad = host("bad", cpus=64, memory_gib=256)
    spoil(bad)

    async def main() -> float:
        began = time.monotonic()
        await cluster.start(hosts=[bad, host("good")], vms=[vm("a")])
        await cluster.controller.check_host("bad")
        await cluster.vm_event("a")
        return time.monotonic() - began

    took = asyncio.run(main())
    assert took < 1.0
    assert cluster.claims() == {"default/a": "good"}
    status = cluster.kube.host("bad")["status"]
    assert condition(status, "Schedulable") == (
        "False",
        "InvalidSpec",
        f"the controller cannot read this host: {why}",
    )
    assert condition(status, "Ready") == (
        "True",
        "AgentHeartbeating",
        "the host's agent renews its Lease",
    )
    assert "allocatable" not in status


def test_a_host_that_becomes_unreadable_leaves_placement_and_returns_once_fixed(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await cluster.start(hosts=[host("h1")], vms=[vm("a", host="h1")])
        spoiled = cluster.kube.host("h1")
        spoiled["spec"]["cpuSharedSet"] = "7-2"
        await cluster.controller.on_host("MODIFIED", spoiled)
        assert "h1" not in cluster.controller.state
        cluster.kube.add_vm(vm("b"))
        await cluster.vm_event("b")
        assert cluster.vm_status("b")["phase"] == "Unschedulable"

        await cluster.controller.on_host("MODIFIED", cluster.kube.host("h1"))
        # Back: the bound VM's claim is held again and the waiting VM placed beside it.
        assert cluster.claims() == {"default/a": "h1", "default/b": "h1"}

    asyncio.run(main())


def test_a_vm_the_controller_cannot_read_fails_with_a_condition_and_is_placed_once_fixed(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await cluster.start(hosts=[host("h1")], vms=[vm("bad", memory="1e999999999.0"), vm("a")])
        await cluster.vm_event("bad")
        await cluster.vm_event("a")
        assert cluster.claims() == {"default/a": "h1"}
        status = cluster.vm_status("bad")
        why = (
            "the controller cannot read this VM: spec.memory.size: '1e999999999.0' must be a "
            "size such as 512Mi or 2Gi: a number with an optional suffix (Ki, Mi, Gi, Ti, "
            "Pi, Ei, k, M, G, T, P, E, or an exponent such as e9)"
        )
        assert status["phase"] == "Failed"
        assert condition(status, "Scheduled") == ("False", "InvalidSpec", why)
        assert condition(status, "Stalled") == ("True", "InvalidSpec", why)

        cluster.kube.vms[f"{NAMESPACE}/bad"].obj["spec"]["memory"]["size"] = "1Gi"
        await cluster.vm_event("bad")
        status = cluster.vm_status("bad")
        assert (status["phase"], status["host"]) == ("Scheduled", "h1")
        assert condition(status, "Scheduled")[:2] == ("True", "Scheduled")
        assert "Stalled" not in {c["type"] for c in status["conditions"]}

    asyncio.run(main())


def test_a_bound_vm_the_controller_cannot_read_keeps_its_host_and_can_be_deleted(
    cluster: Cluster,
) -> None:
    bound = vm("a", host="h1")
    bound["spec"]["memory"]["size"] = "1e999999999.0"

    async def main() -> None:
        await cluster.start(hosts=[host("h1")], vms=[bound])
        await cluster.vm_event("a")
        # Its agent says it cannot read it; the controller leaves its binding alone.
        assert cluster.vm_status("a")["host"] == "h1"
        assert cluster.kube.called("apply_vm_status") == []

        stored = cluster.kube.vms[f"{NAMESPACE}/a"].obj
        stored["metadata"]["deletionTimestamp"] = "2024-05-01T12:00:00Z"
        cluster.kube.agent_vm_status(f"{NAMESPACE}/a", created=False, phase="Terminating")
        await cluster.vm_event("a")
        meta = cluster.kube.vm(f"{NAMESPACE}/a")["metadata"]
        assert VM_FINALIZER not in (meta.get("finalizers") or [])

    asyncio.run(main())


class _FailingFor(FakeKube):
    """An API server that refuses every status write of one VM."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused

    async def apply_vm_status(self, namespace: str, name: str, status: Object) -> Object:
        if name == self.refused:
            raise RuntimeError(f"cannot write {name}")
        return await super().apply_vm_status(namespace, name, status)


def test_one_vm_whose_reconcile_raises_does_not_stop_the_others_waiting_with_it() -> None:
    cluster = Cluster(kube=_FailingFor("first"))

    async def main() -> None:
        await cluster.start(hosts=[host("h1", cpus=1)], vms=[vm("first"), vm("second")])
        # Both wait: the only host is full of a bound VM.
        full = vm("big", host="h1", vcpus=4)
        cluster.kube.add_vm(full)
        await cluster.vm_event("big")
        cluster.controller.pending.update({"default/first": None, "default/second": None})
        # The big VM goes: both are retried, and the first's failure stops nothing.
        await cluster.controller.on_vm("DELETED", cluster.kube.vm(f"{NAMESPACE}/big"))
        assert cluster.claims() == {"default/second": "h1"}

    asyncio.run(main())
