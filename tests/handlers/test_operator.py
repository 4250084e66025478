"""handlers/operator.py: each resource's watch events reach the part of the controller
that owns it (the `EVENTS` routes kopf registers), as (event type, object)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from kubevisor.api.wire import CLUSTER_FLAVORS, FLAVORS
from kubevisor.handlers import operator


class Recorder:
    """An `on_*` method of the fake controller: records what it was called with."""

    def __init__(self, path: str, calls: list[tuple[str, tuple[Any, ...]]]) -> None:
        self.path, self.calls = path, calls

    async def __call__(self, *args: Any) -> None:
        self.calls.append((self.path, args))


def fake_controller(calls: list[tuple[str, tuple[Any, ...]]]) -> Any:
    def on(path: str) -> Recorder:
        return Recorder(path, calls)

    return SimpleNamespace(
        on_vm=on("on_vm"),
        on_host=on("on_host"),
        migrations=SimpleNamespace(on_job=on("migrations.on_job")),
        networks=SimpleNamespace(
            on_network=on("networks.on_network"),
            services=SimpleNamespace(on_service=on("networks.services.on_service")),
        ),
        namespaces=SimpleNamespace(on_namespace=on("namespaces.on_namespace")),
        flavors=SimpleNamespace(on_flavor=on("flavors.on_flavor")),
        quotas=SimpleNamespace(on_quota=on("quotas.on_quota")),
    )


OBJ = {"metadata": {"name": "x", "namespace": "team"}}


@pytest.mark.parametrize(
    ("plural", "group", "reached", "args"),
    [
        pytest.param("virtualmachines", "kubevisor.io", "on_vm", (), id="vms"),
        pytest.param("hypervisorhosts", "kubevisor.io", "on_host", (), id="hosts"),
        pytest.param("migrationjobs", "kubevisor.io", "migrations.on_job", (), id="jobs"),
        pytest.param("networks", "kubevisor.io", "networks.on_network", (), id="networks"),
        pytest.param("namespaces", "", "namespaces.on_namespace", (), id="namespaces"),
        pytest.param(
            "virtualmachineclusterflavors",
            "kubevisor.io",
            "flavors.on_flavor",
            (CLUSTER_FLAVORS.kind,),
            id="cluster-flavors-name-their-kind",
        ),
        pytest.param(
            "virtualmachineflavors",
            "kubevisor.io",
            "flavors.on_flavor",
            (FLAVORS.kind,),
            id="flavors-name-their-kind",
        ),
        pytest.param("services", "", "networks.services.on_service", (), id="services"),
        pytest.param("resourcequotas", "", "quotas.on_quota", (), id="quotas"),
    ],
)
def test_a_watch_event_reaches_the_part_that_owns_the_resource(
    plural: str, group: str, reached: str, args: tuple[Any, ...]
) -> None:
    (route,) = [r for r in operator.EVENTS if r.plural == plural]
    calls: list[tuple[str, tuple[Any, ...]]] = []
    handler = operator._event_handler(route)
    memo = SimpleNamespace(controller=fake_controller(calls))
    asyncio.run(handler(event={"type": "MODIFIED", "object": OBJ}, memo=memo))
    assert route.group[0] == group
    assert calls == [(reached, (*args, "MODIFIED", OBJ))]


def test_every_route_has_its_own_handler_id() -> None:
    ids = [route.id for route in operator.EVENTS]
    assert len(ids) == len(set(ids)) == 9
