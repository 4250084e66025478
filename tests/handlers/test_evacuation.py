"""Maintenance drains, evictions and failover (handlers/evacuation.py) on a fake API server.

A drain runs on each `check_host` of a host whose `spec.maintenance` is true; failover on
the `check_host` that finds a host's heartbeat missing for longer than the grace period.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from kubevisor.api.wire import DRAIN_LABEL
from kubevisor.core.drain import MAX_ATTEMPTS
from kubevisor.handlers.controller import Settings

from .fake_cluster import (
    HOST_LABEL,
    LEASE_NAMESPACE,
    START,
    Cluster,
    host,
    job,
    lease,
    vm,
)

DRAIN_REASON = "host h1 is in maintenance"


def _drain_jobs(cluster: Cluster) -> list[str]:
    return cluster.kube.called("create_job")


def _drain_status(cluster: Cluster, name: str = "h1") -> dict[str, object]:
    return dict(cluster.kube.host(name)["status"]["drain"])


# -- drains ----------------------------------------------------------------------------------


def test_drain_creates_one_migration_job_for_a_running_live_migrate_vm(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1", maintenance=True), host("h2")], vms=[vm("a", host="h1")]
        )
        await cluster.controller.check_host("h1")

        (key,) = _drain_jobs(cluster)
        created = cluster.kube.job(key)
        assert created["metadata"]["name"].startswith("a-drain-")
        assert created["metadata"]["labels"] == {DRAIN_LABEL: "h1"}
        assert created["spec"] == {"vm": "a"}
        assert cluster.kube.reasons("a") == ["Draining"]
        assert _drain_status(cluster) == {
            "phase": "Draining",
            "remaining": 1,
            "migrating": 1,
            "stopping": 0,
            "blocked": 0,
            "message": "1 VMs left: 1 migrating, 0 stopping",
        }

        await cluster.controller.check_host("h1")
        assert len(_drain_jobs(cluster)) == 1

    asyncio.run(main())


def test_drain_job_migrates_the_vm_and_the_host_ends_drained(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1", maintenance=True), host("h2")], vms=[vm("a", host="h1")]
        )
        await cluster.controller.check_host("h1")
        (key,) = _drain_jobs(cluster)
        name = key.split("/")[1]
        await cluster.job_event(name)
        preparing = cluster.kube.job(key)
        assert preparing["status"]["target"] == "h2"
        assert preparing["metadata"]["labels"][DRAIN_LABEL] == "h1"  # kept by the patch

        cluster.kube.agent_job_status(key, "target", targetAgent={"ready": True})
        await cluster.job_event(name)
        cluster.kube.agent_job_status(key, "source", transfer={"state": "Succeeded"})
        await cluster.job_event(name)
        assert cluster.vm_status("a")["host"] == "h2"

        await cluster.controller.check_host("h1")
        assert _drain_status(cluster) == {
            "phase": "Drained",
            "remaining": 0,
            "migrating": 0,
            "stopping": 0,
            "blocked": 0,
            "message": "no VMs left on the host",
        }
        assert len(_drain_jobs(cluster)) == 1

    asyncio.run(main())


@pytest.mark.parametrize(
    ("eviction_strategy", "phase"),
    [
        pytest.param("Shutdown", "Running", id="shutdown-strategy"),
        pytest.param("LiveMigrate", "Stopped", id="live-migrate-but-not-running"),
    ],
)
def test_drain_evicts_a_vm_that_does_not_live_migrate(
    cluster: Cluster, eviction_strategy: str, phase: str
) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1", maintenance=True), host("h2")],
            vms=[vm("a", host="h1", phase=phase, eviction_strategy=eviction_strategy)],
        )
        await cluster.controller.check_host("h1")

        status = cluster.vm_status("a")
        assert status["eviction"] == {"host": "h1", "reason": DRAIN_REASON}
        assert status["host"] == "h1"
        assert status["phase"] == phase  # the agent's until it has stopped the guest
        assert _drain_jobs(cluster) == []
        assert cluster.kube.reasons("a") == ["Evicting"]
        drained = _drain_status(cluster)
        assert (drained["phase"], drained["remaining"], drained["stopping"]) == ("Draining", 1, 1)

        writes = len(cluster.kube.calls)
        await cluster.controller.check_host("h1")
        assert len(cluster.kube.calls) == writes  # asked once

    asyncio.run(main())


def test_drain_of_an_lxc_host_moves_a_live_migrate_container_cold(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[
                host("h1", maintenance=True, hypervisor_type="lxc"),
                host("h2", hypervisor_type="lxc"),
            ],
            # evictionStrategy LiveMigrate, the default
            vms=[vm("a", host="h1", container={"rootfs": "/srv/a"})],
        )
        await cluster.controller.check_host("h1")

        assert _drain_jobs(cluster) == []
        assert cluster.vm_status("a")["eviction"] == {
            "host": "h1",
            "reason": "host h1 is in maintenance and lxc hosts cannot live-migrate",
        }
        drained = _drain_status(cluster)
        assert (drained["phase"], drained["stopping"], drained["blocked"]) == ("Draining", 1, 0)

    asyncio.run(main())


def test_evicted_vm_is_unbound_once_stopped_and_placed_elsewhere(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1", maintenance=True), host("h2")],
            vms=[vm("a", host="h1", eviction_strategy="Shutdown")],
        )
        await cluster.controller.check_host("h1")
        await cluster.vm_event("a")  # the watch delivers the eviction write: still created
        assert cluster.vm_status("a")["host"] == "h1"
        assert cluster.claims() == {"default/a": "h1"}

        calls = len(cluster.kube.calls)
        cluster.kube.agent_vm_status("default/a", phase="Stopped", created=False)
        await cluster.vm_event("a")

        # Unbound first (status, then the label), then placed like a new VM.
        assert cluster.kube.calls[calls:] == [
            ("apply_vm_status", "default/a"),
            ("patch_vm", "default/a"),
            ("apply_vm_status", "default/a"),
            ("patch_vm", "default/a"),
        ]
        obj = cluster.kube.vm("default/a")
        assert obj["status"]["host"] == "h2"
        assert obj["status"]["phase"] == "Scheduled"
        assert "eviction" not in obj["status"]
        assert obj["metadata"]["labels"][HOST_LABEL] == "h2"
        assert cluster.claims() == {"default/a": "h2"}
        assert cluster.controller.state.usage("h1").vms == 0
        assert cluster.kube.reasons("a") == ["Evicting", "Rescheduling", "Scheduled"]

        await cluster.controller.check_host("h1")
        assert _drain_status(cluster)["phase"] == "Drained"

    asyncio.run(main())


def test_unbinding_an_evicted_vm_drops_host_and_label_before_placing_it(
    cluster: Cluster,
) -> None:
    """With nowhere else to go it stays unbound: Unschedulable, no host, no host label."""

    async def main() -> None:
        await cluster.start(
            hosts=[host("h1", maintenance=True)],
            vms=[vm("a", host="h1", eviction_strategy="Shutdown")],
        )
        await cluster.controller.check_host("h1")
        cluster.kube.agent_vm_status("default/a", phase="Stopped", created=False)
        await cluster.vm_event("a")

        obj = cluster.kube.vm("default/a")
        assert "host" not in obj["status"]
        assert "placement" not in obj["status"]
        assert obj["status"]["phase"] == "Unschedulable"
        assert HOST_LABEL not in obj["metadata"]["labels"]
        assert cluster.claims() == {}
        assert "default/a" in cluster.controller.pending

    asyncio.run(main())


def test_drain_is_blocked_by_a_vm_with_eviction_strategy_none(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1", maintenance=True), host("h2")],
            vms=[vm("a", host="h1", eviction_strategy="None")],
        )
        await cluster.controller.check_host("h1")

        assert _drain_jobs(cluster) == []
        assert "eviction" not in cluster.vm_status("a")
        drained = _drain_status(cluster)
        assert (drained["phase"], drained["blocked"]) == ("Blocked", 1)
        assert "blocked by a (evictionStrategy None)" in str(drained["message"])

    asyncio.run(main())


def _failed_drain_job(name: str, drain: str | None = "h1") -> dict[str, object]:
    return job(
        name,
        "a",
        labels={DRAIN_LABEL: drain} if drain else {},
        status={"phase": "Failed", "source": "h1", "target": "h2", "reason": "aborted"},
    )


@pytest.mark.parametrize(
    ("failed", "drain", "new_jobs", "phase"),
    [
        pytest.param(MAX_ATTEMPTS - 1, "h1", 1, "Draining", id="retried-below-the-threshold"),
        pytest.param(MAX_ATTEMPTS, "h1", 0, "Blocked", id="blocked-at-the-threshold"),
        pytest.param(MAX_ATTEMPTS, None, 1, "Draining", id="failures-outside-a-drain-ignored"),
        pytest.param(MAX_ATTEMPTS, "h3", 1, "Draining", id="failures-of-another-drain-ignored"),
    ],
)
def test_failed_drain_migrations_are_retried_up_to_the_threshold(
    cluster: Cluster, failed: int, drain: str | None, new_jobs: int, phase: str
) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1", maintenance=True), host("h2")],
            vms=[vm("a", host="h1")],
            jobs=[_failed_drain_job(f"old-{i}", drain) for i in range(failed)],
        )
        await cluster.controller.check_host("h1")

        assert len(_drain_jobs(cluster)) == new_jobs
        drained = _drain_status(cluster)
        assert drained["phase"] == phase
        if phase == "Blocked":
            assert f"a ({MAX_ATTEMPTS} failed migrations)" in str(drained["message"])

    asyncio.run(main())


def test_drain_of_a_lost_host_only_reports_progress(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1", maintenance=True), host("h2")],
            vms=[vm("a", host="h1"), vm("b", host="h1", eviction_strategy="Shutdown")],
            leases=[lease("h2")],  # h1 never heartbeated
        )
        await cluster.controller.check_host("h1")

        assert _drain_jobs(cluster) == []
        assert "eviction" not in cluster.vm_status("b")
        drained = _drain_status(cluster)
        assert (drained["phase"], drained["remaining"]) == ("Draining", 2)

    asyncio.run(main())


def test_host_out_of_maintenance_has_no_drain_status(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1")])
        await cluster.controller.check_host("h1")

        assert "drain" not in cluster.kube.host("h1")["status"]
        assert cluster.kube.host("h1")["status"]["vmCount"] == 1
        assert _drain_jobs(cluster) == []

    asyncio.run(main())


# -- failover --------------------------------------------------------------------------------


async def _lose_h1_among(cluster: Cluster, others: list[str], seconds: float) -> None:
    """h1 stops renewing its Lease, `others` keep renewing; `seconds` later h1 is checked."""
    cluster.clock.advance(seconds)
    for name in others:
        cluster.controller.remember_lease(lease(name, cluster.clock.now))
        await cluster.controller.check_host(name)
    await cluster.controller.check_host("h1")


async def _lose_h1(cluster: Cluster, seconds: float) -> None:
    """h1 stops renewing its Lease; h2 keeps renewing; `seconds` later h1 is checked."""
    await _lose_h1_among(cluster, ["h2"], seconds)


STRATEGIES = [
    pytest.param("Always", True, id="always-restarts-elsewhere"),
    pytest.param("RerunOnFailure", True, id="rerun-on-failure-restarts-elsewhere"),
    pytest.param("Manual", False, id="manual-stays"),
    pytest.param("Once", False, id="once-stays"),
    pytest.param("Halted", False, id="halted-stays"),
]


@pytest.mark.parametrize(("run_strategy", "moves"), STRATEGIES)
def test_failover_places_restartable_vms_elsewhere_after_the_grace(
    cluster: Cluster, run_strategy: str, moves: bool
) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1", run_strategy=run_strategy)]
        )
        # Lease duration 40 s, grace 120 s.
        await _lose_h1(cluster, 40 + 119)
        assert cluster.vm_status("a")["host"] == "h1"
        assert cluster.vm_status("a")["phase"] == "Unknown"

        await _lose_h1(cluster, 1)
        status = cluster.vm_status("a")
        labels = cluster.kube.vm("default/a")["metadata"]["labels"]
        if moves:
            assert (status["host"], status["phase"], labels[HOST_LABEL]) == (
                "h2",
                "Scheduled",
                "h2",
            )
            assert cluster.claims() == {"default/a": "h2"}
            assert "Rescheduling" in cluster.kube.reasons("a")
        else:
            assert (status["host"], status["phase"], labels[HOST_LABEL]) == ("h1", "Unknown", "h1")
            assert cluster.claims() == {"default/a": "h1"}

    asyncio.run(main())


def test_failover_moves_only_the_restartable_vms_of_the_lost_host(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2"), host("h3")],
            vms=[
                vm("always", host="h1", run_strategy="Always"),
                vm("manual", host="h1", run_strategy="Manual"),
                vm("elsewhere", host="h3", run_strategy="Always"),
            ],
        )
        cluster.clock.advance(161)
        cluster.controller.remember_lease(lease("h2", cluster.clock.now))
        await cluster.controller.check_host("h2")
        cluster.controller.remember_lease(lease("h3", cluster.clock.now))
        await cluster.controller.check_host("h3")
        await cluster.controller.check_host("h1")

        assert cluster.vm_status("always")["host"] in ("h2", "h3")
        assert cluster.vm_status("manual")["host"] == "h1"
        assert cluster.vm_status("elsewhere")["host"] == "h3"
        assert cluster.controller.state.usage("h1").vms == 1

    asyncio.run(main())


def test_no_failover_without_a_grace_period() -> None:
    cluster = Cluster(Settings(lease_namespace=LEASE_NAMESPACE, failover_grace=None))

    async def main() -> None:
        await cluster.start(hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1")])
        await _lose_h1(cluster, 3600)

        assert cluster.vm_status("a")["host"] == "h1"
        assert cluster.vm_status("a")["phase"] == "Unknown"

    asyncio.run(main())


LOST_AN_HOUR_AGO = [lease("h1", START - timedelta(hours=1)), lease("h2")]


def test_host_lost_before_a_restart_fails_over_once_its_vms_were_seen(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1")], leases=LOST_AN_HOUR_AGO
        )
        await cluster.vm_event("a")  # the first listing: phase Unknown, host h1 is lost
        assert cluster.vm_status("a")["phase"] == "Unknown"
        await cluster.controller.check_host("h1")

        assert cluster.vm_status("a")["host"] == "h2"

    asyncio.run(main())


def test_host_lost_before_a_restart_fails_over_on_the_first_host_check(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1")], leases=LOST_AN_HOUR_AGO
        )
        await cluster.controller.check_host("h1")  # before any VM event

        assert cluster.vm_status("a")["host"] == "h2"
        assert "conditions" in cluster.kube.host("h1")["status"]

    asyncio.run(main())


# -- failover: where the VM restarts and with which disks ------------------------------------


def test_failover_restarts_the_vm_on_a_host_with_its_shared_storage(cluster: Cluster) -> None:
    """h3 is fuller than h2 but mounts nfs, where the VM's disks are."""

    async def main() -> None:
        await cluster.start(
            hosts=[host("h1", shared_storage="nfs"), host("h2"), host("h3", shared_storage="nfs")],
            vms=[
                vm("a", host="h1", shared_storage="nfs"),
                vm("busy", host="h3", memory="8Gi", vcpus=4),
            ],
        )
        await _lose_h1_among(cluster, ["h2", "h3"], 161)

        assert cluster.vm_status("a")["host"] == "h3"
        assert cluster.kube.reasons("a") == ["Rescheduling", "Scheduled", "FailingOver"]
        ((_, scheduled),) = cluster.kube.said("a", "Scheduled")
        assert scheduled.endswith(": has the VM's shared storage nfs")
        assert cluster.kube.said("a", "FailingOver") == [
            ("Normal", "host h1 was lost: restarts on h3 with its disks from shared storage nfs")
        ]

    asyncio.run(main())


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        pytest.param(
            None,
            "host h1 was lost: restarts on h2 from its image: the changes to its local disks "
            "on h1 are lost",
            id="local-disks",
        ),
        pytest.param(
            "nfs",
            "host h1 was lost: restarts on h2 from its image: h2 lacks shared storage nfs, so "
            "the changes to its disks there are not used",
            id="no-host-with-its-shared-storage-fits",
        ),
    ],
)
def test_failover_warns_when_the_vm_restarts_from_its_image(
    cluster: Cluster, storage: str | None, message: str
) -> None:
    async def main() -> None:
        await cluster.start(
            # h3 mounts nfs but is too small for the VM: soft, so the VM goes to h2.
            hosts=[
                host("h1", shared_storage="nfs"),
                host("h2"),
                host("h3", shared_storage="nfs", memory_gib=1),
            ],
            vms=[vm("a", host="h1", memory="2Gi", shared_storage=storage)],
        )
        await _lose_h1_among(cluster, ["h2", "h3"], 161)

        assert cluster.vm_status("a")["host"] == "h2"
        assert cluster.kube.said("a", "FailingOver") == [("Warning", message)]

    asyncio.run(main())


def test_failover_event_waits_until_the_vm_has_a_host(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1", shared_storage="nfs")], vms=[vm("a", host="h1", shared_storage="nfs")]
        )
        await _lose_h1_among(cluster, [], 161)
        assert cluster.vm_status("a")["phase"] == "Unschedulable"
        assert "FailingOver" not in cluster.kube.reasons("a")

        cluster.controller.remember_lease(lease("h2", cluster.clock.now))
        await cluster.controller.on_host(
            "ADDED", cluster.kube.add_host(host("h2", shared_storage="nfs"))
        )

        assert cluster.vm_status("a")["host"] == "h2"
        assert cluster.kube.said("a", "FailingOver") == [
            ("Normal", "host h1 was lost: restarts on h2 with its disks from shared storage nfs")
        ]
        await cluster.controller.check_host("h1")
        assert len(cluster.kube.said("a", "FailingOver")) == 1  # said once

    asyncio.run(main())


def test_no_failover_event_for_a_vm_that_stays(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1", run_strategy="Manual")]
        )
        await _lose_h1_among(cluster, ["h2"], 161)

        assert cluster.vm_status("a")["host"] == "h1"
        assert cluster.kube.said("a", "FailingOver") == []
        assert cluster.controller.evacuation.failovers == {}

    asyncio.run(main())


def test_a_vm_deleted_before_it_found_a_host_leaves_no_failover_behind(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(hosts=[host("h1")], vms=[vm("a", host="h1")])
        await _lose_h1_among(cluster, [], 161)
        assert set(cluster.controller.evacuation.failovers) == {"default/a"}

        await cluster.controller.on_vm("DELETED", cluster.kube.vm("default/a"))
        assert cluster.controller.evacuation.failovers == {}

    asyncio.run(main())
