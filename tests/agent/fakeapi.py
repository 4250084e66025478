"""An in-memory API server for the agent's unit tests: the calls of `Kube` the agent makes.

Like the real one it sends every VM change to the watch, the agent's own status writes
included (they do not bump metadata.generation; spec changes do), and it applies the
agent's VM status by server-side apply under the agent's field manager (the model in
`server_side_apply`, shared with the controller's `handlers/fake_cluster.FakeKube`): a
field the agent stops applying goes, one it never applied stays. The MigrationJobs' status
(under the two migration managers) and the host's status are applied the same way; it
also records the Events.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

from kubernetes.aio.client.exceptions import ApiException

from kubevisor.api.wire import HOST_LABEL
from kubevisor.kube.client import Object
from server_side_apply import Owners, apply_status, held_by

HOST = "fake-host"
NAMESPACE = "ns"
AGENT_MANAGER = "kubevisor-agent"


class FakeApiServer:
    def __init__(self) -> None:
        self.vms: dict[str, Object] = {}
        self.vm_owners: dict[str, Owners] = {}
        """Per VM key: which field manager holds which status field."""
        self.host: Object | None = None
        self.host_owners: Owners = {}
        """Which field manager holds which field of the host's status."""
        self.host_creations = 0
        self.host_status_writes = 0
        self.jobs: dict[str, Object] = {}
        self.job_owners: dict[str, Owners] = {}
        """Per job key: which field manager holds which status field."""
        self.job_writes: dict[str, list[tuple[str, Object]]] = {}
        """Per job key: every (manager, status) applied, in order."""
        self.events: list[dict[str, Any]] = []
        self.networks: dict[str, Object] = {}
        """Networks by namespace/name (`add_network`)."""
        self.peers: dict[str, Object] = {}
        """The other HypervisorHosts by name (`add_peer`); this host's is `host`."""
        self._followers: dict[str, list[asyncio.Queue[tuple[str, Object]]]] = {}
        self.status_writes = 0
        self._versions = itertools.count(1)
        self._watch: asyncio.Queue[tuple[str, Object]] = asyncio.Queue()

    # -- what a test does ----------------------------------------------------------------

    def create(self, name: str, spec: dict[str, Any], *, host: str = HOST) -> tuple[str, str]:
        """A VM already bound to `host`, as the controller leaves it; returns (key, uid)."""
        uid = str(uuid.uuid4())
        self.vms[f"{NAMESPACE}/{name}"] = {
            "apiVersion": "kubevisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": uid,
                "generation": 1,
                "resourceVersion": str(next(self._versions)),
                "labels": {HOST_LABEL: host},
            },
            "spec": spec,
            "status": {"host": host, "phase": "Scheduled"},
        }
        return f"{NAMESPACE}/{name}", uid

    def change_spec(self, key: str, spec: dict[str, Any]) -> None:
        obj = self.vms[key]
        obj["spec"] = spec
        obj["metadata"]["generation"] += 1
        self._send("MODIFIED", obj)

    def delete(self, key: str) -> None:
        self._send("DELETED", self.vms.pop(key))

    def set_host_spec(self, spec: dict[str, Any], *, labels: dict[str, str] | None = None) -> None:
        """An admin's change of the host object (created if missing): a new generation."""
        host = self.host or {"metadata": {"name": HOST, "generation": 0}}
        host["metadata"]["generation"] += 1
        host["metadata"]["labels"] = labels or host["metadata"].get("labels") or {}
        host["spec"] = copy.deepcopy(spec)
        self.host = host

    def delete_host(self) -> None:
        self.host = None
        self.host_owners = {}

    def _send(self, kind: str, obj: Object) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        self._watch.put_nowait((kind, copy.deepcopy(obj)))

    # -- VirtualMachines -----------------------------------------------------------------

    async def list_vms(self, *, label_selector: str = "") -> tuple[list[Object], str]:
        return [copy.deepcopy(obj) for obj in self.vms.values()], str(next(self._versions))

    async def watch_vms(
        self, *, label_selector: str, resource_version: str, timeout: int = 300
    ) -> AsyncIterator[tuple[str, Object]]:
        while True:
            yield await self._watch.get()

    async def apply_vm_status(self, namespace: str, name: str, status: Object) -> Object:
        key = f"{namespace}/{name}"
        obj = self.vms[key]
        apply_status(obj, self.vm_owners.setdefault(key, {}), AGENT_MANAGER, status)
        self.status_writes += 1
        self._send("MODIFIED", obj)
        return copy.deepcopy(obj)

    async def get_vm(self, namespace: str, name: str) -> Object | None:
        obj = self.vms.get(f"{namespace}/{name}")
        return copy.deepcopy(obj) if obj is not None else None

    # -- MigrationJobs -------------------------------------------------------------------

    async def list_jobs(self, *, label_selector: str = "") -> tuple[list[Object], str]:
        label, _, value = label_selector.partition("=")
        found = [
            copy.deepcopy(job)
            for job in self.jobs.values()
            if (job["metadata"].get("labels") or {}).get(label) == value
        ]
        return found, str(next(self._versions))

    async def watch_jobs(
        self, *, label_selector: str, resource_version: str, timeout: int = 300
    ) -> AsyncIterator[tuple[str, Object]]:
        await asyncio.Event().wait()  # tests hand jobs to Migrator.on_job themselves
        yield "BOOKMARK", {}

    async def apply_job_status(
        self, namespace: str, name: str, status: Object, *, manager: str | None = None
    ) -> Object:
        key = f"{namespace}/{name}"
        job = self.jobs.setdefault(key, {"metadata": {"namespace": namespace, "name": name}})
        apply_status(job, self.job_owners.setdefault(key, {}), manager or "", status)
        self.job_writes.setdefault(key, []).append((manager or "", copy.deepcopy(status)))
        return copy.deepcopy(job)

    def job_status(self, key: str, manager: str) -> Object:
        """The status fields of job `key` that `manager` holds now (none before it applied)."""
        if key not in self.jobs:
            return {}
        return held_by(self.jobs[key], self.job_owners[key], manager)

    # -- Networks and the other hosts ----------------------------------------------------

    def add_network(
        self, name: str, spec: dict[str, Any], status: dict[str, Any], *, uid: str | None = None
    ) -> str:
        """A Network in NAMESPACE (created or replaced); returns its uid."""
        old = self.networks.get(f"{NAMESPACE}/{name}")
        uid = old["metadata"]["uid"] if old else uid or str(uuid.uuid4())
        obj = {
            "metadata": {"namespace": NAMESPACE, "name": name, "uid": uid},
            "spec": copy.deepcopy(spec),
            "status": copy.deepcopy(status),
        }
        self.networks[f"{NAMESPACE}/{name}"] = obj
        self._tell("networks", "MODIFIED" if old else "ADDED", obj)
        return uid

    def add_peer(self, name: str, tunnel_endpoint: str | None) -> None:
        """Another host, with its agent's tunnel endpoint (None: the host is deleted)."""
        obj = {
            "metadata": {"name": name},
            "spec": {},
            "status": {"network": {"tunnelEndpoint": tunnel_endpoint}} if tunnel_endpoint else {},
        }
        if tunnel_endpoint is None:
            self.peers.pop(name, None)
        else:
            self.peers[name] = obj
        self._tell("hosts", "DELETED" if tunnel_endpoint is None else "MODIFIED", obj)

    def _tell(self, plural: str, kind: str, obj: Object) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        for queue in self._followers.get(plural, []):
            queue.put_nowait((kind, copy.deepcopy(obj)))

    async def _follow(self, plural: str) -> AsyncIterator[tuple[str, Object]]:
        queue: asyncio.Queue[tuple[str, Object]] = asyncio.Queue()
        self._followers.setdefault(plural, []).append(queue)
        while True:
            yield await queue.get()

    async def list_networks(self) -> tuple[list[Object], str]:
        return [copy.deepcopy(obj) for obj in self.networks.values()], str(next(self._versions))

    def watch_networks(
        self, *, resource_version: str, timeout: int = 300
    ) -> AsyncIterator[tuple[str, Object]]:
        return self._follow("networks")

    async def list_hosts_at(self) -> tuple[list[Object], str]:
        hosts = [*([self.host] if self.host else []), *self.peers.values()]
        return [copy.deepcopy(obj) for obj in hosts], str(next(self._versions))

    def watch_hosts(
        self, *, resource_version: str, timeout: int = 300
    ) -> AsyncIterator[tuple[str, Object]]:
        return self._follow("hosts")

    # -- HypervisorHosts, Leases and Events ----------------------------------------------

    async def get_host(self, name: str) -> Object | None:
        return copy.deepcopy(self.host)

    async def create_host(
        self, name: str, labels: dict[str, str], spec: Object | None = None
    ) -> Object:
        self.host_creations += 1
        self.host_owners = {}
        self.host = {
            "metadata": {"name": name, "labels": labels, "generation": 1},
            "spec": copy.deepcopy(spec or {}),
        }
        return copy.deepcopy(self.host)

    async def apply_host_status(self, name: str, status: Object) -> Object:
        if self.host is None:
            raise ApiException(status=404, reason=f'hypervisorhosts "{name}" not found')
        apply_status(self.host, self.host_owners, AGENT_MANAGER, status)
        self.host_status_writes += 1
        return copy.deepcopy(self.host)

    async def renew_lease(self, *, namespace: str, name: str, duration: int) -> None:
        pass

    async def event(self, **fields: Any) -> None:
        self.events.append(fields)
