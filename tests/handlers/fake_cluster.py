"""An in-memory API server for the controller's tests, and builders for what it holds.

`FakeKube` implements the `Kube` calls the controller makes (VM and MigrationJob patches,
status applies, job creation, host status, events) on plain dicts. Status applies follow
server-side apply as `server_side_apply` models it (shared with the agent's fake API
server). The agents' writes are simulated with `agent_vm_status` / `agent_job_status`
under their own managers.

Nothing is delivered by watch: a test hands the controller the objects it wants it to
see (`Cluster.vm_event`, `Cluster.job_event`), so the order of events is the test's.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from kubevisor.api.wire import AGENT, CONTROLLER, HOST_LABEL, VM_FINALIZER
from kubevisor.drivers import power
from kubevisor.handlers import listing
from kubevisor.handlers.controller import Controller, Settings
from kubevisor.handlers.powerfencing import Connect
from kubevisor.kube.client import Kube, Object
from server_side_apply import apply_status, fields, held_by, merge

NAMESPACE = "default"
LEASE_NAMESPACE = "kubevisor-system"
USER = "kubectl-patch"
START = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

# Who writes which part of a status, for objects a test creates already populated.
_CONTROLLER_VM_FIELDS = frozenset(
    {"host", "placement", "eviction", "lastMigration", "observedGeneration"}
)
_AGENT_JOB_FIELDS = frozenset({"targetAgent", "transfer", "progress"})


class Clock:
    """The controller's clock: time moves only when a test calls `advance`."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class _Stored:
    obj: Object
    owners: dict[str, set[str]] = field(default_factory=dict)

    def apply(self, manager: str, status: Object) -> None:
        apply_status(self.obj, self.owners, manager, status)


class FakeKube:
    """The API server as the controller sees it through `Kube`."""

    def __init__(self) -> None:
        self.vms: dict[str, _Stored] = {}
        self.jobs: dict[str, _Stored] = {}
        self.hosts: dict[str, _Stored] = {}
        self.networks: dict[str, _Stored] = {}
        self.quotas: dict[str, Object] = {}
        """ResourceQuotas by namespace/name."""
        self.quota_owners: dict[str, dict[str, set[str]]] = {}
        """Per namespace/name/hard or /used: which field manager holds which key."""
        self.namespaces: dict[str, Object] = {}
        """Namespaces by name (the controller reads their host pools)."""
        self.slices: dict[str, Object] = {}
        """EndpointSlices as last applied, by namespace/name."""
        self.services: dict[str, Object] = {}
        """Services as listed, by namespace/name (the controller follows them by watch)."""
        self._versions = itertools.count(1)
        self.calls: list[tuple[str, str]] = []
        """(method, namespace/name) of every call, in order."""
        self.events: list[tuple[str, str, str, str]] = []
        self.secrets: dict[str, dict[str, str]] = {}
        """Secrets' data by namespace/name."""
        """(object name, type, reason, message) of every Event recorded."""
        self._suffixes = itertools.count(1)
        self._uids = itertools.count(1)

    # -- seeding and inspecting (the tests' side) ------------------------------------------

    def add_vm(self, obj: Object) -> Object:
        stored = _Stored(copy.deepcopy(obj))
        for name in fields(obj.get("status") or {}):
            manager = CONTROLLER if name in _CONTROLLER_VM_FIELDS else AGENT
            stored.owners[name] = {manager}
        self.vms[_key(obj)] = stored
        return self.vm(_key(obj))

    def add_job(self, obj: Object) -> Object:
        stored = _Stored(copy.deepcopy(obj))
        for name in fields(obj.get("status") or {}):
            stored.owners[name] = {AGENT if name in _AGENT_JOB_FIELDS else CONTROLLER}
        self.jobs[_key(obj)] = stored
        return self.job(_key(obj))

    def add_host(self, obj: Object) -> Object:
        self.hosts[obj["metadata"]["name"]] = _Stored(copy.deepcopy(obj))
        return self.host(obj["metadata"]["name"])

    def add_network(self, obj: Object) -> Object:
        self.networks[_key(obj)] = _Stored(copy.deepcopy(obj))
        return self.network(_key(obj))

    def network(self, key: str) -> Object:
        return copy.deepcopy(self.networks[key].obj)

    def add_quota(self, obj: Object) -> Object:
        self.quotas[_key(obj)] = copy.deepcopy(obj)
        return self.quota(_key(obj))

    def quota(self, key: str) -> Object:
        return copy.deepcopy(self.quotas[key])

    def vm(self, key: str) -> Object:
        return copy.deepcopy(self.vms[key].obj)

    def job(self, key: str) -> Object:
        return copy.deepcopy(self.jobs[key].obj)

    def host(self, name: str) -> Object:
        return copy.deepcopy(self.hosts[name].obj)

    def agent_vm_status(self, key: str, **status: Any) -> Object:
        """What a host's agent applies to a VM's status (phase, created, ...)."""
        self.vms[key].apply(AGENT, {**_fields_of(self.vms[key], AGENT), **status})
        return self.vm(key)

    def edit_vm_status(self, key: str, **status: Any) -> Object:
        """A user's `kubectl patch --subresource=status` of a VM: the fields it sets are
        held by that user's field manager too from then on."""
        stored = self.vms[key]
        for name, value in status.items():
            stored.obj.setdefault("status", {})[name] = copy.deepcopy(value)
            stored.owners.setdefault(name, set()).add(USER)
        return self.vm(key)

    def change_vm(self, key: str, patch: Object) -> Object:
        """A user's merge patch of a VM's spec: its generation moves on."""
        stored = self.vms[key]
        merge(stored.obj, patch)
        stored.obj["metadata"]["generation"] = int(stored.obj["metadata"]["generation"]) + 1
        return self.vm(key)

    def agent_job_status(self, key: str, manager: str, **status: Any) -> Object:
        """What the source or target agent applies to a job's status."""
        self.jobs[key].apply(manager, {**_fields_of(self.jobs[key], manager), **status})
        return self.job(key)

    def change_job(self, key: str, patch: Object) -> Object:
        """A user's (or the garbage collector's) merge patch of a job."""
        merge(self.jobs[key].obj, patch)
        return self.job(key)

    def called(self, method: str) -> list[str]:
        return [name for called, name in self.calls if called == method]

    def reasons(self, name: str) -> list[str]:
        return [reason for involved, _, reason, _ in self.events if involved == name]

    def said(self, name: str, reason: str) -> list[tuple[str, str]]:
        """(type, message) of the events with `reason` about object `name`."""
        return [(t, m) for involved, t, r, m in self.events if (involved, r) == (name, reason)]

    # -- what the controller calls -----------------------------------------------------------

    async def list_flavors(self, resource: Any) -> list[Object]:
        return []

    async def list_namespaces(self) -> list[Object]:
        return copy.deepcopy(list(self.namespaces.values()))

    async def list_hosts(self) -> list[Object]:
        return [self.host(name) for name in self.hosts]

    async def list_vms(self) -> tuple[list[Object], str]:
        """Every VM, at no resourceVersion (this fake keeps none: the listing is the truth)."""
        return [self.vm(key) for key in self.vms], ""

    async def list_quotas(self) -> list[Object]:
        return [self.quota(key) for key in self.quotas]

    async def apply_quota_status(
        self, namespace: str, name: str, *, hard: dict[str, str], used: dict[str, str]
    ) -> Object:
        """Server-side apply of map entries (the controller owns each key it applies): keys
        of `hard` and `used` other writers set stay, one the controller stops applying goes."""
        key = f"{namespace}/{name}"
        self.calls.append(("apply_quota_status", key))
        status = self.quotas[key].setdefault("status", {})
        for part, entries in (("hard", hard), ("used", used)):
            owners = self.quota_owners.setdefault(f"{key}/{part}", {})
            held = {"status": status.get(part) or {}}  # the map's keys as top-level fields
            apply_status(held, owners, CONTROLLER, entries)
            status[part] = held["status"]
        return self.quota(key)

    async def list_jobs(self) -> tuple[list[Object], str]:
        return [self.job(key) for key in self.jobs], ""

    async def patch_vm(self, namespace: str, name: str, patch: Object) -> Object:
        self.calls.append(("patch_vm", f"{namespace}/{name}"))
        merge(self.vms[f"{namespace}/{name}"].obj, patch)
        return self.vm(f"{namespace}/{name}")

    async def patch_vm_status(self, namespace: str, name: str, patch: Object) -> Object | None:
        """A merge patch of the status: a field set to None goes, whoever held it (this
        fake keeps no resourceVersions, so the patch always applies)."""
        self.calls.append(("patch_vm_status", f"{namespace}/{name}"))
        stored = self.vms[f"{namespace}/{name}"]
        for field_name, value in patch["status"].items():
            if value is None:
                stored.owners.pop(field_name, None)
        merge(stored.obj.setdefault("status", {}), patch["status"])
        return self.vm(f"{namespace}/{name}")

    async def apply_vm_status(self, namespace: str, name: str, status: Object) -> Object:
        self.calls.append(("apply_vm_status", f"{namespace}/{name}"))
        self.vms[f"{namespace}/{name}"].apply(CONTROLLER, status)
        return self.vm(f"{namespace}/{name}")

    async def apply_vm_interfaces(
        self, namespace: str, name: str, interfaces: list[Object]
    ) -> Object:
        self.calls.append(("apply_vm_interfaces", f"{namespace}/{name}"))
        self.vms[f"{namespace}/{name}"].apply(f"{CONTROLLER}-network", {"interfaces": interfaces})
        return self.vm(f"{namespace}/{name}")

    async def patch_network(self, namespace: str, name: str, patch: Object) -> Object:
        """A merge patch of a Network's metadata; like the API server, a Network being
        deleted goes once its last finalizer does."""
        key = f"{namespace}/{name}"
        self.calls.append(("patch_network", key))
        stored = self.networks[key]
        merge(stored.obj, patch)
        meta = stored.obj["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.networks[key]
            return copy.deepcopy(stored.obj)
        return self.network(key)

    async def apply_network_status(self, namespace: str, name: str, status: Object) -> Object:
        self.calls.append(("apply_network_status", f"{namespace}/{name}"))
        self.networks[f"{namespace}/{name}"].apply(CONTROLLER, status)
        return self.network(f"{namespace}/{name}")

    async def apply_endpoint_slice(self, body: Object) -> Object:
        key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
        self.calls.append(("apply_endpoint_slice", key))
        stored = copy.deepcopy(body)
        stored["metadata"]["uid"] = f"uid-slice-{key}"
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        self.slices[key] = stored
        return copy.deepcopy(stored)

    async def delete_endpoint_slice(
        self, namespace: str, name: str, *, preconditions: tuple[str, str] | None = None
    ) -> bool:
        key = f"{namespace}/{name}"
        self.calls.append(("delete_endpoint_slice", key))
        found = self.slices.get(key)
        if found is None or (
            preconditions is not None
            and preconditions != (found["metadata"]["uid"], found["metadata"]["resourceVersion"])
        ):
            return False
        del self.slices[key]
        return True

    async def list_endpoint_slices(self, *, label_selector: str) -> list[Object]:
        label, _, value = label_selector.partition("=")
        return [
            copy.deepcopy(found)
            for found in self.slices.values()
            if (found["metadata"].get("labels") or {}).get(label) == value
        ]

    async def list_services(self) -> list[Object]:
        return [copy.deepcopy(found) for found in self.services.values()]

    async def create_job(self, namespace: str, body: Object) -> Object:
        obj = copy.deepcopy(body)
        meta = obj["metadata"]
        if not meta.get("name"):
            meta["name"] = f"{meta.pop('generateName')}{next(self._suffixes):05d}"
        meta["namespace"] = namespace
        meta["uid"] = f"job-uid-{next(self._uids)}"
        meta.setdefault("creationTimestamp", f"2024-05-01T12:00:{next(self._uids):02d}Z")
        meta["generation"] = 1
        key = f"{namespace}/{meta['name']}"
        assert key not in self.jobs, f"{key} already exists"
        self.calls.append(("create_job", key))
        self.jobs[key] = _Stored(obj)
        return self.job(key)

    async def patch_job(self, namespace: str, name: str, patch: Object) -> Object:
        self.calls.append(("patch_job", f"{namespace}/{name}"))
        merge(self.jobs[f"{namespace}/{name}"].obj, patch)
        return self.job(f"{namespace}/{name}")

    async def apply_job_status(
        self, namespace: str, name: str, status: Object, *, manager: str | None = None
    ) -> Object:
        self.calls.append(("apply_job_status", f"{namespace}/{name}"))
        self.jobs[f"{namespace}/{name}"].apply(manager or CONTROLLER, status)
        return self.job(f"{namespace}/{name}")

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        self.calls.append(("read_secret", f"{namespace}/{name}"))
        secret = self.secrets.get(f"{namespace}/{name}")
        return None if secret is None else dict(secret)

    async def apply_host_status(self, name: str, status: Object) -> Object:
        self.calls.append(("apply_host_status", name))
        self.hosts[name].apply(CONTROLLER, status)
        return self.host(name)

    async def event(
        self, *, involved: Object, type_: str, reason: str, message: str, component: str
    ) -> None:
        self.events.append((involved["metadata"]["name"], type_, reason, message))


def _fields_of(stored: _Stored, manager: str) -> Object:
    """The status fields `manager` holds now, so a partial agent write keeps the rest."""
    return held_by(stored.obj, stored.owners, manager)


def _key(obj: Object) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace') or NAMESPACE}/{meta['name']}"


# -- builders ---------------------------------------------------------------------------------


def host(
    name: str,
    *,
    cpus: int = 8,
    memory_gib: int = 16,
    maintenance: bool = False,
    labels: dict[str, str] | None = None,
    shared_storage: str | None = None,
    hypervisor_type: str = "kvm",
) -> Object:
    """A HypervisorHost as its agent reports it: one NUMA cell holding every CPU; with
    `shared_storage`, mounting the shared storage of that name."""
    spec: Object = {"maintenance": maintenance}
    if shared_storage is not None:
        spec["sharedStorage"] = {"name": shared_storage, "path": f"/srv/{shared_storage}"}
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "HypervisorHost",
        "metadata": {"name": name, "generation": 1, "labels": dict(labels or {})},
        "spec": spec,
        "status": {
            "hypervisor": {"type": hypervisor_type},
            "cpu": {"model": "Skylake-Server", "vendor": "Intel", "features": ["vmx"]},
            "capacity": {"cpu": cpus, "memory": f"{memory_gib}Gi", "disk": "500Gi"},
            "numaCells": [
                {
                    "id": 0,
                    "cpus": list(range(cpus)),
                    "siblings": [[cpu] for cpu in range(cpus)],
                    "memory": f"{memory_gib}Gi",
                }
            ],
        },
    }


def lease(name: str, renewed: datetime = START, *, duration: int = 40) -> Object:
    """The heartbeat Lease of host `name`, last renewed at `renewed`."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": duration,
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
    }


def vm(
    name: str,
    *,
    host: str | None = None,
    phase: str = "Running",
    run_strategy: str = "Always",
    eviction_strategy: str = "LiveMigrate",
    memory: str = "1Gi",
    vcpus: int = 1,
    group: str | None = None,
    shared_storage: str | None = None,
    **more_spec: Any,
) -> Object:
    """A VirtualMachine; with `host`, bound there and as its agent reports it (`phase`,
    and `status.storage`: its disks in `shared_storage`, or else on the host's disk).
    `more_spec` adds spec fields as they are on the wire (e.g. `hypervisor={...}`)."""
    spec: Object = {
        "runStrategy": run_strategy,
        "evictionStrategy": eviction_strategy,
        "cpu": {"vcpus": vcpus},
        "memory": {"size": memory},
        **more_spec,
    }
    if group is not None:
        spec["placement"] = {"group": group, "policy": "anti-affinity", "maxPerHost": 1}
    meta: Object = {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "generation": 1}
    obj: Object = {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": meta,
        "spec": spec,
    }
    if host is not None:
        meta["labels"] = {HOST_LABEL: host}
        meta["finalizers"] = [VM_FINALIZER]
        obj["status"] = {
            "host": host,
            "placement": {},
            "observedGeneration": 1,
            "phase": phase,
            "created": phase not in ("Scheduled", "Stopped"),
            "storage": {"location": "Shared", "sharedStorage": shared_storage, "host": host}
            if shared_storage is not None
            else {"location": "Local", "host": host},
        }
    return obj


def job(
    name: str,
    vm_name: str,
    *,
    target: str | None = None,
    cancel: bool = False,
    created: str = "2024-05-01T12:00:00Z",
    status: Object | None = None,
    labels: dict[str, str] | None = None,
) -> Object:
    """A MigrationJob as a user creates it (or, with `status`, as a listing shows it)."""
    spec: Object = {"vm": vm_name}
    if target is not None:
        spec["targetHost"] = target
    if cancel:
        spec["cancel"] = True
    obj: Object = {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "MigrationJob",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "generation": 1,
            "creationTimestamp": created,
            "labels": dict(labels or {}),
        },
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


# -- the controller wired to them ----------------------------------------------------------------


class Cluster:
    """A controller on a `FakeKube` and a `Clock`; `start` loads it like a restart does."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        kube: FakeKube | None = None,
        connect_bmc: Connect = power.connect,
    ) -> None:
        self.kube = kube or FakeKube()
        self.clock = Clock()
        self.controller = Controller(
            settings=settings or Settings(lease_namespace=LEASE_NAMESPACE),
            kube=cast(Kube, self.kube),
            clock=self.clock,
            connect_bmc=connect_bmc,
        )

    async def start(
        self,
        *,
        hosts: Sequence[Object],
        vms: Sequence[Object] = (),
        jobs: Sequence[Object] = (),
        leases: list[Object] | None = None,
        networks: Sequence[Object] = (),
        quotas: Sequence[Object] = (),
        namespaces: Sequence[Object] = (),
    ) -> None:
        """Every host heartbeating now unless `leases` says otherwise."""
        for obj in namespaces:
            self.kube.namespaces[obj["metadata"]["name"]] = copy.deepcopy(obj)
        for obj in networks:
            self.kube.add_network(obj)
        for obj in hosts:
            self.kube.add_host(obj)
        for obj in vms:
            self.kube.add_vm(obj)
        for obj in jobs:
            self.kube.add_job(obj)
        await listing.load(
            self.controller,
            hosts=[self.kube.host(h["metadata"]["name"]) for h in hosts],
            vms=[self.kube.vm(_key(v)) for v in vms],
            leases=leases if leases is not None else [lease(h["metadata"]["name"]) for h in hosts],
            jobs=[self.kube.job(_key(j)) for j in jobs],
        )
        self.controller.networks.load(
            networks=[self.kube.network(_key(n)) for n in networks],
            vms=[self.kube.vm(_key(v)) for v in vms],
        )
        for obj in quotas:
            self.kube.add_quota(obj)
        self.controller.quotas.load(await self.kube.list_quotas())
        await self.controller.quotas.publish_all()
        self.controller.namespaces.load(await self.kube.list_namespaces())

    async def vm_event(self, name: str) -> Object:
        """Deliver the VM as the API server holds it now."""
        obj = self.kube.vm(f"{NAMESPACE}/{name}")
        await self.controller.on_vm("MODIFIED", obj)
        return self.kube.vm(f"{NAMESPACE}/{name}")

    async def job_event(self, name: str) -> Object:
        """Deliver the job as the API server holds it now (ADDED or MODIFIED alike)."""
        obj = self.kube.job(f"{NAMESPACE}/{name}")
        await self.controller.migrations.on_job("MODIFIED", obj)
        return self.kube.job(f"{NAMESPACE}/{name}")

    async def create_job(self, obj: Object) -> Object:
        """A user creates a job; the controller sees it."""
        self.kube.add_job(obj)
        return await self.job_event(obj["metadata"]["name"])

    def job_status(self, name: str) -> Object:
        return dict(self.kube.job(f"{NAMESPACE}/{name}").get("status") or {})

    def vm_status(self, name: str) -> Object:
        return dict(self.kube.vm(f"{NAMESPACE}/{name}").get("status") or {})

    def claims(self) -> dict[str, str]:
        """Placement-state key -> host of every claim the controller holds."""
        return {key: claim.host for key, claim in self.controller.state.claims().items()}
