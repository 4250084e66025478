"""The controller's state from listings: built whole at start-up (`load`), and set right
by a periodic resync (`resync`) — the level-triggered backstop of every hand-off between
the controller and the agents.

The watch events kopf delivers drive the controller; but an event can be lost to it (a
handler that failed on a transient error, a write that raced with another) and the
controller acts on each VM only when something about it happens. The resync re-derives
what to do from the objects as the API server lists them, so a lost event delays a VM
by at most `Settings.resync_interval` and never strands it (as an evicted VM whose
agent had stopped it once was: never placed again).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import ValidationError

from kubevisor.api import objects
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.api.wire import CLUSTER_FLAVORS, FLAVORS
from kubevisor.core.placement import inputs
from kubevisor.kube.client import Object

if TYPE_CHECKING:
    from kubevisor.handlers.controller import Controller

log = logging.getLogger("kubevisor.controller")


async def load(
    c: Controller,
    *,
    hosts: list[Object],
    vms: list[Object],
    leases: list[Object],
    jobs: list[Object] | None = None,
) -> None:
    """Build the controller's whole state from a listing, before any event is handled
    (kopf's start-up handler, handlers.operator)."""
    for lease in leases:
        c.remember_lease(lease)
    for host in hosts:
        name = host["metadata"]["name"]
        c.hosts[name] = host
        c.judgements[name] = c.judge_heartbeat(name)
    readable = []
    for vm in vms:
        key = objects.key(vm["metadata"])
        c.vms[key] = vm
        try:
            readable.append(VirtualMachine.model_validate(vm))
        except ValidationError as invalid:
            # Its first reconcile says so on the VM.
            log.error("%s cannot be read: %s", key, objects.unreadable(invalid))
    snapshots = (c.snapshot(name) for name in c.hosts)
    listing = inputs.state_from(
        (snapshot for snapshot in snapshots if snapshot is not None),
        readable,
        ratios=c.settings.ratios,
        multipliers=c.settings.multipliers,
    )
    c.state = listing.state
    for conflict in listing.conflicts:
        claim = conflict.claim
        log.error("%s: cannot rebuild its claim on %s: %s", claim.vm, claim.host, conflict.reason)
    for unreadable in listing.unreadable:
        log.error("%s: cannot build its claim on %s: %s", *unreadable)
    c.migrations.load(jobs or [])


async def resync_if_due(c: Controller) -> None:
    """Resync when the last one is `resync_interval` old. Every host's timer calls it
    (handlers.operator): kopf pauses those on a replica that is not the peering's active
    one, so only the active replica resyncs; a call while one runs returns at once."""
    now = c.clock()
    if c.resynced is not None and now - c.resynced < timedelta(seconds=c.settings.resync_interval):
        return
    c.resynced = now
    await resync(c)


async def resync(c: Controller) -> None:
    """The hosts, VMs, MigrationJobs, flavors and Namespaces' host pools as the API server lists
    them now replace older cached versions, objects gone from the listing are handled as
    deleted, and every VM and unfinished job is reconciled from that, as its watch event
    would have had it; quotas are read again, and EndpointSlices no Service asks for any
    more are deleted."""
    hosts = await c.kube.list_hosts()
    vms, vms_at = await c.kube.list_vms()
    jobs, jobs_at = await c.kube.list_jobs()
    # Every VM is reconciled below, with the pools and flavors as listed: no retry needed.
    c.namespaces.load(await c.kube.list_namespaces())
    c.flavors.load(
        cluster=await c.kube.list_flavors(CLUSTER_FLAVORS),
        namespaced=await c.kube.list_flavors(FLAVORS),
    )
    for host in hosts:
        await c.on_host("MODIFIED", host)
    listed = {objects.key(vm["metadata"]) for vm in vms}
    for vm in vms:
        c.remember_vm(vm)
    for key, cached in list(c.vms.items()):
        if key not in listed and objects.gone_since(cached, vms_at):
            await c.on_vm("DELETED", cached)
    # What the controller remembers patching stands for a label the watch has yet to
    # show; the cache now holds the newer of the listing and any later reply, so a label
    # it lacks is missing (removed by hand, say) and is patched again.
    c.writes.labelled.clear()
    for key in list(c.vms):
        await c.reconcile_vm(key)
    await c.migrations.resync(jobs, jobs_at)
    await c.quotas.resync(await c.kube.list_quotas())
    await c.networks.services.sweep()
