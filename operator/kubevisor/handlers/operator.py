"""kopf glue: which watch events reach the Controller, and how kopf itself behaves.

Only stateless handlers are used: `on.event` for VirtualMachines, HypervisorHosts,
MigrationJobs, Networks, both flavor kinds, Services, ResourceQuotas and Namespaces
(their host pools), one `timer` per HypervisorHost that judges its heartbeat and,
every `--resync-interval`, resyncs everything from fresh listings (`handlers.listing`;
the agents' Leases are followed by a plain watch of their one namespace, see
`follow_leases`), and one `timer` per VirtualMachineSnapshotSchedule (its pass,
`handlers.snapshotschedules`; kopf's finalizer is on schedules too).
kopf therefore stores no handler progress and no diff base on any object, and VMs carry
only kubevisor's own finalizer (the timer makes kopf add its finalizer to HypervisorHosts:
a host object is deleted only while the controller runs, like a Node).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from kubevisor import metrics
from kubevisor.api.wire import (
    CLUSTER_FLAVORS,
    FLAVORS,
    GROUP,
    HYPERVISOR_HOSTS,
    MIGRATION_JOBS,
    NETWORKS,
    SNAPSHOT_SCHEDULES,
    VERSION,
    VIRTUAL_MACHINES,
)
from kubevisor.handlers import listing, snapshotschedules
from kubevisor.handlers.controller import Controller
from kubevisor.kube.client import Object
from kubevisor.kube.errors import Gone, is_transient, retrying
from kubevisor.kube.snapshotschedules import ScheduleApi

log = logging.getLogger("kubevisor.controller")

HOST_CHECK_INTERVAL = 2.0
SCHEDULE_CHECK_INTERVAL = 10.0
"""Seconds between two passes over a snapshot schedule: cron's unit is the minute."""


@contextmanager
def counting_errors(handler: str) -> Iterator[None]:
    try:
        yield
    except Exception:
        metrics.RECONCILE_ERRORS.labels(handler).inc()
        raise


async def follow_leases(controller: Controller, namespace: str, resource_version: str) -> None:
    """Feed the heartbeat Leases of `namespace` to the controller, for as long as it runs."""
    kube = controller.kube
    while True:
        try:
            async for kind, lease in kube.watch_leases(
                namespace, resource_version=resource_version
            ):
                resource_version = lease["metadata"]["resourceVersion"]
                if kind not in ("DELETED", "BOOKMARK"):
                    controller.remember_lease(lease)
        except Gone:
            leases, resource_version = await retrying(
                "listing Leases", functools.partial(kube.list_leases_at, namespace)
            )
            for lease in leases:
                controller.remember_lease(lease)
        except Exception as error:
            if not is_transient(error):
                log.exception("following Leases in %s failed; retrying", namespace)
            await asyncio.sleep(1.0)


OnEvent = Callable[[str | None, Object], Awaitable[None]]
"""A part of the controller that takes watch events: `(event type, object)`."""


@dataclass(frozen=True, slots=True)
class Route:
    """Which resource's watch events reach which part of the controller; `id` names the
    kopf handler in its logs."""

    id: str
    plural: str
    to: Callable[[Controller], OnEvent]
    group: tuple[str, str] = (GROUP, VERSION)


CORE = ("", "v1")

EVENTS: tuple[Route, ...] = (
    Route("vm_event", VIRTUAL_MACHINES.plural, lambda c: c.on_vm),
    Route("host_event", HYPERVISOR_HOSTS.plural, lambda c: c.on_host),
    Route("job_event", MIGRATION_JOBS.plural, lambda c: c.migrations.on_job),
    Route("network_event", NETWORKS.plural, lambda c: c.networks.on_network),
    Route("namespace_event", "namespaces", lambda c: c.namespaces.on_namespace, CORE),
    Route(
        "cluster_flavor_event",
        CLUSTER_FLAVORS.plural,
        lambda c: functools.partial(c.flavors.on_flavor, CLUSTER_FLAVORS.kind),
    ),
    Route(
        "flavor_event",
        FLAVORS.plural,
        lambda c: functools.partial(c.flavors.on_flavor, FLAVORS.kind),
    ),
    Route("service_event", "services", lambda c: c.networks.services.on_service, CORE),
    Route("quota_event", "resourcequotas", lambda c: c.quotas.on_quota, CORE),
)


def _event_handler(route: Route) -> Callable[..., Coroutine[Any, Any, None]]:
    async def handle(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        controller: Controller = memo.controller
        await route.to(controller)(event["type"], dict(event["object"]))

    return handle


def registry(*, lease_namespace: str) -> kopf.OperatorRegistry:
    """A fresh registry with every handler of the controller (no import-time globals)."""
    handlers = kopf.OperatorRegistry()

    @kopf.on.login(registry=handlers)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # kopf's own readers: no dependency on a client library's config loader.
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(
            **kwargs
        ) or kopf.login_with_kubeconfig(**kwargs)
        return info

    @kopf.on.startup(registry=handlers)
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # Progress and diff bases: none of our handlers is a change-detecting one
        # (create/update/delete/resume), so kopf writes neither; should one be added, keep
        # its marks in annotations under our own prefix rather than in `status`, whose
        # every field has one writer and a strict schema.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="kopf.kubevisor.io"
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="kopf.kubevisor.io", key="last-handled-configuration"
        )
        # kopf posts a Kubernetes Event for every handler outcome at INFO; our own events
        # (Scheduled, FailedScheduling, Fenced) say what matters, so only its warnings.
        settings.posting.level = logging.WARNING
        # Long-lived watches go stale silently behind some proxies (kopf#1120): bound them.
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 30
        # kopf waits this long for more events of one object before handling it (0.1 s by
        # default); a new VM should be placed as soon as it appears.
        settings.batching.batch_window = 0.01
        controller: Controller = memo.controller
        kube = controller.kube
        leases, leases_at = await kube.list_leases_at(lease_namespace)
        # Not a kopf watch: kopf watches every resource cluster-wide, which would need
        # read access to every namespace's Leases. This only remembers heartbeats (a
        # paused peering replica keeps them fresh too); the per-host timer, which kopf
        # pauses, judges them.
        memo.leases = asyncio.create_task(
            follow_leases(controller, lease_namespace, leases_at), name="leases"
        )
        vms, _listed_at = await kube.list_vms()
        jobs, _listed_at = await kube.list_jobs()
        networks, _listed_at = await kube.list_networks()
        controller.flavors.load(
            cluster=await kube.list_flavors(CLUSTER_FLAVORS),
            namespaced=await kube.list_flavors(FLAVORS),
        )
        await listing.load(
            controller,
            hosts=await kube.list_hosts(),
            vms=vms,
            leases=leases,
            jobs=jobs,
        )
        controller.networks.load(networks=networks, vms=vms)
        controller.quotas.load(await kube.list_quotas())
        await controller.quotas.publish_all()
        controller.namespaces.load(await kube.list_namespaces())
        await controller.networks.services.sweep()

    for route in EVENTS:
        group, version = route.group
        kopf.on.event(group, version, route.plural, id=route.id, registry=handlers)(
            _event_handler(route)
        )

    @kopf.timer(
        GROUP, VERSION, HYPERVISOR_HOSTS.plural, interval=HOST_CHECK_INTERVAL, registry=handlers
    )
    async def host_timer(name: str, memo: kopf.Memo, **_: Any) -> None:
        controller: Controller = memo.controller
        await controller.check_host(name)
        await listing.resync_if_due(controller)

    @kopf.timer(
        GROUP,
        VERSION,
        SNAPSHOT_SCHEDULES.plural,
        interval=SCHEDULE_CHECK_INTERVAL,
        registry=handlers,
    )
    async def schedule_timer(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        controller: Controller = memo.controller
        schedule = dict(body)
        namespace = schedule["metadata"]["namespace"]
        with counting_errors("snapshot-schedule"):
            await snapshotschedules.reconcile(
                ScheduleApi(controller.kube),
                schedule,
                vms=[o for k, o in controller.vms.items() if k.startswith(f"{namespace}/")],
                now=datetime.now(UTC),
            )

    @kopf.on.cleanup(registry=handlers)
    async def stop_following(memo: kopf.Memo, **_: Any) -> None:
        task: asyncio.Task[None] | None = memo.get("leases")
        if task is not None:
            task.cancel()

    return handlers
