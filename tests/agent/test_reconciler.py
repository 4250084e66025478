"""One reconcile (`agent.reconciler.Reconciler`) of one VM, on a `FakeHypervisor`.

Each test calls `reconcile` itself, as a worker would; what the watch would deliver is
handed to `BoundVms` by the test. The host (its shared storage) and the migrator are
in-memory stand-ins of the protocols the reconciler asks them through.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from agent.fakeapi import HOST, FakeApiServer
from kubevisor.agent.pulls import ImagePulls
from kubevisor.agent.reconciler import Reconciler
from kubevisor.agent.settings import Settings
from kubevisor.agent.vmfiles import VmFiles
from kubevisor.agent.vms import BoundVms
from kubevisor.agent.workqueue import WorkQueue
from kubevisor.api.hypervisorhost import SharedStorage
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.domain.host import BootFiles
from kubevisor.core.placement import inputs
from kubevisor.drivers import base
from kubevisor.drivers.fake import FakeHypervisor
from kubevisor.kube.client import Kube

SPEC: dict[str, Any] = {"memory": {"size": "96Mi"}}


@dataclass
class Host:
    shared: SharedStorage | None = None
    shared_cpus: frozenset[int] | None = None
    security_model: str | None = None

    async def refresh_shared(self) -> SharedStorage | None:
        return self.shared


@dataclass
class Migrations:
    to: dict[str, str] = field(default_factory=dict)
    departed: set[str] = field(default_factory=set)
    cold: set[str] = field(default_factory=set)

    def migrating_to(self, vm_key: str) -> str | None:
        return self.to.get(vm_key)

    def moving_cold(self, vm_key: str) -> bool:
        return vm_key in self.cold

    def is_departed(self, uid: str) -> bool:
        return uid in self.departed

    def forget_departed(self, uid: str) -> bool:
        if uid not in self.departed:
            return False
        self.departed.discard(uid)
        return True


@dataclass
class Agent:
    hv: FakeHypervisor
    api: FakeApiServer
    vms: BoundVms
    files: VmFiles
    migrations: Migrations
    reconciler: Reconciler

    def bind(self, name: str, spec: dict[str, Any] = SPEC, **status: Any) -> tuple[str, str]:
        """A VM bound here, as the watch delivers it; returns (key, uid)."""
        key, uid = self.api.create(name, spec)
        self.api.vms[key]["status"].update(status)
        self.vms.remember(self.api.vms[key])
        return key, uid

    def status(self, key: str) -> dict[str, Any]:
        return dict(self.api.vms[key]["status"])

    def condition(self, key: str, type_: str) -> tuple[str, str]:
        (found,) = [c for c in self.status(key)["conditions"] if c["type"] == type_]
        return found["status"], found["reason"]

    def operations(self, uid: str) -> list[str]:
        return [op for op, u in self.hv.calls if u == uid and op not in ("state", "domain_xml")]


def run(
    tmp_path: Path, scenario: Callable[[Agent], Awaitable[None]], *, host: Host | None = None
) -> None:
    async def main() -> None:
        hv, api, vms = FakeHypervisor(), FakeApiServer(), BoundVms()
        await hv.connect()
        settings = Settings(
            host=HOST,
            domain_type="qemu",
            state_dir=tmp_path / "state",
            image_dir=tmp_path / "images",
            default_boot=BootFiles(kernel=str(tmp_path / "vmlinuz")),
        )
        files = VmFiles(state_dir=settings.state_dir, image_dir=settings.image_dir)
        queue = WorkQueue()
        migrations = Migrations()
        reconciler = Reconciler(
            settings=settings,
            kube=cast(Kube, api),
            hypervisor=hv,
            vms=vms,
            files=files,
            host=host or Host(),
            pulls=ImagePulls(settings=settings, files=files, vms=vms, queue=queue),
            migrations=migrations,
            queue=queue,
        )
        await scenario(Agent(hv, api, vms, files, migrations, reconciler))

    asyncio.run(main())


def test_a_bound_vm_is_started_and_its_status_written_once(tmp_path: Path) -> None:
    async def scenario(agent: Agent) -> None:
        key, uid = agent.bind("new")
        await agent.reconciler.reconcile(key)
        assert agent.operations(uid) == ["define", "start"]
        assert agent.status(key)["phase"] == "Running"
        assert agent.condition(key, "Ready") == ("True", "Running")
        # The watch has not echoed the write yet: the same status is not written again.
        await agent.reconciler.reconcile(key)
        assert agent.api.status_writes == 1
        agent.vms.remember(agent.api.vms[key])
        agent.reconciler.invalidate(key)
        await agent.reconciler.reconcile(key)
        assert agent.api.status_writes == 1, "what the API server has is current"
        assert agent.operations(uid) == ["define", "start"]

    run(tmp_path, scenario)


def test_a_vm_being_unbound_is_left_alone(tmp_path: Path) -> None:
    """The controller writes status.host before it moves the label."""

    async def scenario(agent: Agent) -> None:
        key, uid = agent.bind("leaving", host="other-host")
        await agent.reconciler.reconcile(key)
        assert agent.operations(uid) == []
        assert agent.api.status_writes == 0

    run(tmp_path, scenario)


def test_a_vm_that_left_has_its_domain_shut_down_and_removed(tmp_path: Path) -> None:
    async def scenario(agent: Agent) -> None:
        key, uid = agent.bind("deleted")
        await agent.reconciler.reconcile(key)
        assert agent.files.directory(uid).is_dir()
        agent.vms.unbound(key)
        await agent.reconciler.reconcile(key)
        assert agent.operations(uid)[2:] == ["shutdown", "undefine"]
        assert uid not in agent.hv.domains and not agent.files.directory(uid).exists()
        assert agent.vms.uid(key) is None, "nothing of it left to fence or remove"

    run(tmp_path, scenario)


def test_a_vm_migrated_away_is_neither_started_again_nor_shut_down(tmp_path: Path) -> None:
    async def scenario(agent: Agent) -> None:
        key, uid = agent.bind("migrated")
        agent.files.directory(uid).mkdir(parents=True)
        agent.migrations.departed.add(uid)  # its domain went with it; the label stays
        await agent.reconciler.reconcile(key)
        assert agent.operations(uid) == [], "not started again"
        agent.vms.unbound(key)  # the controller moved the label
        await agent.reconciler.reconcile(key)
        assert agent.operations(uid) == [], "nothing to shut down"
        assert not agent.files.directory(uid).exists()
        assert agent.migrations.departed == set()

    run(tmp_path, scenario)


def test_a_vm_migrating_away_is_not_corrected(tmp_path: Path) -> None:
    async def scenario(agent: Agent) -> None:
        key, uid = agent.bind("moving")
        await agent.reconciler.reconcile(key)
        agent.hv.domains[uid].state = base.DomainState.PAUSED  # libvirt's switch-over
        agent.hv.domains[uid].reason = "migration"
        agent.migrations.to[key] = "target-host"
        await agent.reconciler.reconcile(key)
        assert "resume" not in agent.operations(uid)
        assert agent.status(key)["phase"] == "Migrating"

    run(tmp_path, scenario)


def test_an_evicted_vm_is_shut_down_and_removed(tmp_path: Path) -> None:
    async def scenario(agent: Agent) -> None:
        key, uid = agent.bind("evicted")
        await agent.reconciler.reconcile(key)
        eviction = {"host": HOST, "reason": "host maintenance"}
        agent.api.vms[key]["status"]["eviction"] = eviction
        agent.vms.remember(agent.api.vms[key])
        await agent.reconciler.reconcile(key)
        assert agent.operations(uid)[2:] == ["shutdown", "undefine"]
        assert not agent.files.directory(uid).exists()

    run(tmp_path, scenario)


def test_a_vm_this_agent_cannot_read_fails_once_with_the_reason(tmp_path: Path) -> None:
    async def scenario(agent: Agent) -> None:
        key, uid = agent.bind("unreadable", {"memory": {"size": "a lot"}})
        await agent.reconciler.reconcile(key)
        await agent.reconciler.reconcile(key)
        assert agent.status(key)["phase"] == "Failed"
        assert agent.condition(key, "Stalled") == ("True", "InvalidSpec")
        assert agent.api.status_writes == 1
        assert agent.operations(uid) == []

    run(tmp_path, scenario)


@pytest.mark.parametrize(
    ("error", "phase", "condition"),
    [
        pytest.param(
            base.RetryableError("QEMU is busy", delay=5.0),
            "Starting",
            ("Reconciling", "True"),
            id="retryable-keeps-reconciling",
        ),
        pytest.param(
            base.PermanentError("no such machine type"),
            "Failed",
            ("Stalled", "True", "DomainRejected"),
            id="permanent-stalls",
        ),
    ],
)
def test_a_failed_start_is_reported_then_raised(
    tmp_path: Path, error: base.HypervisorError, phase: str, condition: tuple[str, ...]
) -> None:
    async def scenario(agent: Agent) -> None:
        key, _ = agent.bind("refused")
        agent.hv.fail_next("start", error)
        with pytest.raises(type(error), match=str(error)):
            await agent.reconciler.reconcile(key)
        assert agent.status(key)["phase"] == phase
        type_, *expected = condition
        assert agent.condition(key, type_)[: len(expected)] == tuple(expected)

    run(tmp_path, scenario)


def test_a_vm_runs_on_the_shared_cpus_its_host_gives_shared_vms(tmp_path: Path) -> None:
    async def scenario(agent: Agent) -> None:
        key, uid = agent.bind("shared", {**SPEC, "cpu": {"vcpus": 2}})
        await agent.reconciler.reconcile(key)
        vcpu = ET.fromstring(agent.hv.domains[uid].xml).find("vcpu")
        assert vcpu is not None and vcpu.get("cpuset") == "2-3"

    run(tmp_path, scenario, host=Host(shared_cpus=frozenset({2, 3})))


def claimed(spec: dict[str, Any]) -> dict[str, Any]:
    """status.placement as the controller writes it once it claimed `spec`'s size."""
    vm = VirtualMachine.model_validate(
        {"metadata": {"name": "x", "namespace": "default"}, "spec": spec}
    )
    placement = inputs.placement_status(None, size=inputs.claimed_size(vm))
    assert placement is not None
    return placement.to_wire()


BIG = {**SPEC, "cpu": {"vcpus": 8}}


def test_a_start_waits_until_the_controller_claimed_the_specs_size(tmp_path: Path) -> None:
    """The issue: `minimal` patched from 1 to 8 vCPUs and started again must not come back
    with 8 before the controller checked them against the host."""

    async def scenario(agent: Agent) -> None:
        key, uid = agent.bind("minimal", BIG, placement=claimed(SPEC))
        await agent.reconciler.reconcile(key)
        assert agent.operations(uid) == []
        assert agent.status(key)["phase"] == "Stopped"
        assert agent.condition(key, "Ready") == ("False", "ResizePending")
        (ready,) = [c for c in agent.status(key)["conditions"] if c["type"] == "Ready"]
        assert ready["message"] == (
            f"waiting for the controller to claim 8 vCPUs, 96Mi memory on host {HOST}"
        )

        # The controller refuses: the agent repeats why, and still does not start it.
        refusal = "resize to 8 vCPUs, 96Mi memory refused on host h: needs 8, has 5 free"
        agent.api.vms[key]["status"]["conditions"].append(
            {
                "type": "Scheduled",
                "status": "True",
                "reason": "ResizeRefused",
                "message": refusal,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        )
        agent.vms.remember(agent.api.vms[key])
        agent.reconciler.invalidate(key)
        await agent.reconciler.reconcile(key)
        assert agent.operations(uid) == []
        assert agent.condition(key, "Ready") == ("False", "ResizeRefused")
        assert agent.condition(key, "Stalled") == ("False", "NotStalled")
        (ready,) = [c for c in agent.status(key)["conditions"] if c["type"] == "Ready"]
        assert ready["message"] == refusal

        # The controller claims the new size: now the domain is defined from the spec.
        agent.api.vms[key]["status"]["placement"] = claimed(BIG)
        agent.vms.remember(agent.api.vms[key])
        agent.reconciler.invalidate(key)
        await agent.reconciler.reconcile(key)
        assert agent.operations(uid) == ["define", "start"]
        vcpu = ET.fromstring(agent.hv.domains[uid].xml).find("vcpu")
        assert vcpu is not None and vcpu.text == "8"
        assert agent.condition(key, "Ready") == ("True", "Running")

    run(tmp_path, scenario)


@pytest.mark.parametrize(
    "placement",
    [
        pytest.param(claimed(BIG), id="its-size-claimed"),
        pytest.param({}, id="bound-before-sizes-were-recorded"),
    ],
)
def test_a_vm_whose_size_is_claimed_starts_at_once(
    tmp_path: Path, placement: dict[str, Any]
) -> None:
    async def scenario(agent: Agent) -> None:
        key, uid = agent.bind("sized", BIG, placement=placement)
        await agent.reconciler.reconcile(key)
        assert agent.operations(uid) == ["define", "start"]

    run(tmp_path, scenario)


def test_a_running_domain_is_left_running_when_its_spec_grows(tmp_path: Path) -> None:
    """The change waits for a restart (RestartRequired); nothing is held or stopped."""

    async def scenario(agent: Agent) -> None:
        key, uid = agent.bind("running", SPEC, placement=claimed(SPEC))
        await agent.reconciler.reconcile(key)
        agent.api.change_spec(key, BIG)
        agent.vms.remember(agent.api.vms[key])
        agent.reconciler.invalidate(key)
        await agent.reconciler.reconcile(key)
        assert agent.operations(uid) == ["define", "start"]
        assert agent.condition(key, "Ready") == ("True", "Running")
        assert agent.condition(key, "RestartRequired") == ("True", "SpecChanged")

    run(tmp_path, scenario)
