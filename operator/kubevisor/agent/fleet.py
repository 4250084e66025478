"""Hollow hosts: many agents in one process, each on an in-memory hypervisor.

Kubemark's hollow-node idea for kubevisor (`kubevisor dev fleet --hosts N`, `bench/scale.py`):
every hollow host is a real `agent.Agent` (registration of its HypervisorHost, the Lease
heartbeat, the label-filtered watches of its VMs and MigrationJobs, the work queue and
reconciler, status writes by server-side apply), so the API server sees what N agents
would send. What is not real is below the agent: each host's hypervisor is a
`drivers.fake.FakeHypervisor` (domains start at once, no QEMU), with facts of its own
(name, UUID; 8 CPUs, 8 GiB in two NUMA cells).

Shared by the hosts: the event loop, the process (its interpreter and imported modules,
the Prometheus registry, logging) and one API client (one TLS context, one connection pool
sized for every watch; a real agent has a client of its own). Per host: the `Agent` with
its work queue, caches and tasks, its fake hypervisor, and a state directory.
Self-fencing is off (it guards a real host's guests, which hollow hosts have none of), and
so is the host data plane (Networks); the agents' /metrics and console endpoints are not
served.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

from kubevisor.agent.agent import Agent, Settings
from kubevisor.core.domain.host import BootFiles
from kubevisor.drivers import fake
from kubevisor.drivers.base import HostFacts
from kubevisor.kube.client import Kube

log = logging.getLogger("kubevisor.agent.fleet")

NAMESPACE = uuid.UUID("6f1d7c1e-6a43-4c5e-9c1b-7d1f0e3a2b11")
"""Hollow hosts' UUIDs are uuid5(NAMESPACE, name): stable across restarts of the fleet."""
WATCHES_PER_HOST = 3
"""The agent's long-lived watches: its VMs, its outgoing and its incoming MigrationJobs."""
SPARE_CONNECTIONS = 50
"""Connections for the requests (lists, gets, applies) beside the watches."""


def host_names(prefix: str, count: int) -> list[str]:
    """The hosts' names, e.g. hollow-0000 ... hollow-0499 (sortable)."""
    width = max(4, len(str(count - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(count)]


def facts(name: str) -> HostFacts:
    """The fake's default host, under this host's own name and UUID."""
    uri = f"fake:///{name}"
    return dataclasses.replace(
        fake.default_host_facts(uri),
        hostname=name,
        uuid=str(uuid.uuid5(NAMESPACE, name)),
    )


def settings(name: str, *, state_dir: Path, lease_duration: int | None) -> Settings:
    """A hollow host's agent settings: the agent's defaults, without self-fencing."""
    extra = {} if lease_duration is None else {"lease_duration": lease_duration}
    return Settings(
        host=name,
        domain_type="qemu",
        state_dir=state_dir,
        image_dir=state_dir / "images",
        default_boot=BootFiles(kernel=str(state_dir / "vmlinuz")),
        self_fence_after=None,
        **extra,  # type: ignore[arg-type]
    )


def connections(hosts: int) -> int:
    """The shared client's connection limit for `hosts` hollow hosts."""
    return hosts * WATCHES_PER_HOST + SPARE_CONNECTIONS


def agents(
    names: list[str], *, kube: Kube, state_dir: Path, lease_duration: int | None = None
) -> list[Agent]:
    """One real agent per name, each on its own fake hypervisor, all on `kube`."""
    return [
        Agent(
            settings=settings(name, state_dir=state_dir / name, lease_duration=lease_duration),
            kube=kube,
            hypervisor=fake.FakeHypervisor(uri=f"fake:///{name}", facts=facts(name)),
            libvirt_uri=f"fake:///{name}",
        )
        for name in names
    ]


async def run(fleet: list[Agent], *, ready: Callable[[int], None] = lambda n: None) -> None:
    """Run every agent until one fails (its error is raised) or this is cancelled; `ready`
    is told the number of hosts once all are ready."""

    async def all_ready() -> None:
        await asyncio.gather(*(a.ready.wait() for a in fleet))
        ready(len(fleet))
        await asyncio.Event().wait()  # an agent's failure, or cancelling, ends the fleet

    tasks = [asyncio.create_task(a.run(), name=f"agent-{a.settings.host}") for a in fleet]
    tasks.append(asyncio.create_task(all_ready(), name="fleet-ready"))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
