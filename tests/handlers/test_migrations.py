"""The controller's MigrationJob orchestration (handlers/migrations.py) on a fake API server.

Each test drives one job through the events the watch would deliver and asserts what the
controller wrote (job status, labels, finalizer, the VM's status and label) and what its
placement state holds (the target claim under `migration:<ns>/<job>`).
"""

from __future__ import annotations

import asyncio

import pytest

from kubevisor.api.wire import MIGRATION_FINALIZER, MIGRATION_SOURCE_LABEL, MIGRATION_TARGET_LABEL
from kubevisor.kube.client import Object

from .fake_cluster import AGENT, HOST_LABEL, Cluster, host, job, lease, vm

SOURCE_AGENT = "kubevisor-agent-source"
TARGET_AGENT = "kubevisor-agent-target"


async def _two_hosts_one_vm(cluster: Cluster, *, phase: str = "Running") -> None:
    await cluster.start(hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1", phase=phase)])


async def _running_job(cluster: Cluster) -> None:
    """Job j1 moving VM a from h1 to h2, its transfer under way."""
    await _two_hosts_one_vm(cluster)
    await cluster.create_job(job("j1", "a"))
    cluster.kube.agent_job_status("default/j1", TARGET_AGENT, targetAgent={"ready": True})
    await cluster.job_event("j1")
    assert cluster.job_status("j1")["phase"] == "Running"
    cluster.kube.agent_job_status("default/j1", SOURCE_AGENT, transfer={"state": "Running"})
    await cluster.job_event("j1")


# -- admission and the target ---------------------------------------------------------------


def test_job_for_a_running_vm_claims_a_target_and_goes_preparing(cluster: Cluster) -> None:
    async def main() -> None:
        await _two_hosts_one_vm(cluster)
        await cluster.create_job(job("j1", "a"))

        obj = cluster.kube.job("default/j1")
        status = obj["status"]
        assert status["phase"] == "Preparing"
        assert (status["source"], status["target"]) == ("h1", "h2")
        assert "targetPlacement" in status
        assert obj["metadata"]["labels"] == {
            MIGRATION_SOURCE_LABEL: "h1",
            MIGRATION_TARGET_LABEL: "h2",
        }
        assert obj["metadata"]["finalizers"] == [MIGRATION_FINALIZER]
        assert cluster.claims() == {"default/a": "h1", "migration:default/j1": "h2"}
        usage = cluster.controller.state.usage("h2")
        assert (usage.vms, usage.vcpus, usage.memory_mib) == (1, 1, 1024)
        assert cluster.kube.reasons("a") == ["Migrating"]

    asyncio.run(main())


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        pytest.param("h1", "the VM already runs on host h1", id="target-is-the-source"),
        pytest.param("h9", "HypervisorHost h9 does not exist", id="target-unknown"),
    ],
)
def test_explicit_target_that_cannot_be_used_fails_the_job(
    cluster: Cluster, target: str, reason: str
) -> None:
    async def main() -> None:
        await _two_hosts_one_vm(cluster)
        await cluster.create_job(job("j1", "a", target=target))

        status = cluster.job_status("j1")
        assert status["phase"] == "Failed"
        assert status["reason"] == reason
        assert "completionTime" in status
        assert cluster.claims() == {"default/a": "h1"}
        assert cluster.kube.reasons("a") == ["MigrationFailed"]

    asyncio.run(main())


def test_explicit_target_failing_anti_affinity_fails_the_job_with_the_filters_reason(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")],
            vms=[vm("a", host="h1", group="web"), vm("b", host="h2", group="web")],
        )
        await cluster.create_job(job("j1", "a", target="h2"))

        status = cluster.job_status("j1")
        assert status["phase"] == "Failed"
        assert status["reason"].startswith("host h2 cannot take the VM: ")
        assert "group default/web" in status["reason"]
        assert "migration:default/j1" not in cluster.claims()

    asyncio.run(main())


def test_no_other_host_fitting_fails_the_job_with_the_engines_explanation(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")],
            vms=[vm("a", host="h1", group="web"), vm("b", host="h2", group="web")],
        )
        await cluster.create_job(job("j1", "a"))

        status = cluster.job_status("j1")
        assert status["phase"] == "Failed"
        assert status["reason"].startswith("no other host can take the VM: ")
        assert "anti-affinity" in status["reason"]

    asyncio.run(main())


def test_live_migration_of_an_lxc_container_fails_with_the_reason(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("ct1", hypervisor_type="lxc"), host("ct2", hypervisor_type="lxc")],
            vms=[vm("a", host="ct1", container={"rootfs": "/srv/a"})],
        )
        await cluster.create_job(job("j1", "a"))

        status = cluster.job_status("j1")
        assert status["phase"] == "Failed"
        assert status["reason"] == (
            "lxc hosts cannot live-migrate (a system container has no memory state to "
            "move); stop and start it on another host instead"
        )
        assert cluster.claims() == {"default/a": "ct1"}
        assert cluster.kube.said("a", "MigrationFailed") == [
            ("Warning", f"MigrationJob j1: {status['reason']}")
        ]

    asyncio.run(main())


def cold(obj: Object) -> Object:
    obj["spec"]["mode"] = "Cold"
    return obj


def test_cold_migration_of_an_lxc_container_fails_saying_it_cannot_move_cold(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("ct1", hypervisor_type="lxc"), host("ct2", hypervisor_type="lxc")],
            vms=[vm("a", host="ct1", container={"rootfs": "/srv/a"})],
        )
        await cluster.create_job(cold(job("j1", "a")))

        status = cluster.job_status("j1")
        assert status["phase"] == "Failed"
        assert status["reason"].startswith("lxc hosts cannot move VMs cold either"), status
        assert cluster.claims() == {"default/a": "ct1"}

    asyncio.run(main())


def test_cold_migration_is_admitted_and_claims_its_target_as_a_live_one(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await cluster.start(hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1")])
        await cluster.create_job(cold(job("j1", "a")))

        status = cluster.job_status("j1")
        assert (status["phase"], status["source"], status["target"]) == ("Preparing", "h1", "h2")
        # The VM keeps its claim on the source until the transfer is done.
        assert cluster.claims() == {"default/a": "h1", "migration:default/j1": "h2"}

    asyncio.run(main())


def test_migration_target_runs_the_source_hypervisor_type(cluster: Cluster) -> None:
    async def main() -> None:
        # The big vmware host would win the weighing; only h2 runs the source's type.
        await cluster.start(
            hosts=[
                host("h1"),
                host("h2"),
                host("vc", cpus=64, memory_gib=256, hypervisor_type="vmware"),
            ],
            vms=[vm("a", host="h1"), vm("b", host="h2"), vm("c", host="h2")],
        )
        await cluster.create_job(job("j1", "a"))
        assert cluster.job_status("j1")["target"] == "h2"

        await cluster.create_job(job("j2", "b", target="vc"))
        status = cluster.job_status("j2")
        assert status["phase"] == "Failed"
        assert (
            status["reason"] == "host vc cannot take the VM: host vc runs vmware, the VM needs kvm"
        )

    asyncio.run(main())


def test_explicit_target_in_maintenance_fails_the_job(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2", maintenance=True)], vms=[vm("a", host="h1")]
        )
        await cluster.create_job(job("j1", "a", target="h2"))

        status = cluster.job_status("j1")
        assert status["phase"] == "Failed"
        assert status["reason"] == "host h2 cannot take the VM: host h2 is in maintenance"

    asyncio.run(main())


def test_job_for_a_vm_on_a_lost_host_fails(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1")], leases=[lease("h2")]
        )
        await cluster.create_job(job("j1", "a"))

        status = cluster.job_status("j1")
        assert status["phase"] == "Failed"
        assert status["reason"] == "the VM's host h1 is not Ready"

    asyncio.run(main())


@pytest.mark.parametrize(
    "phase",
    [
        pytest.param("Stopped", id="stopped"),
        pytest.param("Scheduled", id="not-started-yet"),
        pytest.param("Failed", id="failed"),
    ],
)
def test_job_for_a_vm_that_is_not_running_fails(cluster: Cluster, phase: str) -> None:
    async def main() -> None:
        await _two_hosts_one_vm(cluster, phase=phase)
        await cluster.create_job(job("j1", "a"))

        status = cluster.job_status("j1")
        assert status["phase"] == "Failed"
        assert status["reason"] == f"VirtualMachine a is {phase}, not Running"
        assert cluster.claims() == {"default/a": "h1"}

    asyncio.run(main())


def test_job_for_a_missing_vm_fails(cluster: Cluster) -> None:
    async def main() -> None:
        await _two_hosts_one_vm(cluster)
        await cluster.create_job(job("j1", "ghost"))

        status = cluster.job_status("j1")
        assert status["phase"] == "Failed"
        assert status["reason"] == "VirtualMachine ghost does not exist in default"

    asyncio.run(main())


def test_second_job_for_a_vm_already_migrating_fails(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(hosts=[host("h1"), host("h2"), host("h3")], vms=[vm("a", host="h1")])
        await cluster.create_job(job("j1", "a"))
        await cluster.create_job(job("j2", "a"))

        assert cluster.job_status("j1")["phase"] == "Preparing"
        status = cluster.job_status("j2")
        assert status["phase"] == "Failed"
        assert status["reason"] == "MigrationJob default/j1 is already moving this VM"
        assert [k for k in cluster.claims() if k.startswith("migration:")] == [
            "migration:default/j1"
        ]

    asyncio.run(main())


def test_job_over_the_outbound_limit_waits_pending_until_the_first_ends(
    one_at_a_time: Cluster,
) -> None:
    cluster = one_at_a_time

    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1"), vm("b", host="h1")]
        )
        await cluster.create_job(job("j1", "a", created="2024-05-01T12:00:00Z"))
        await cluster.create_job(job("j2", "b", created="2024-05-01T12:00:01Z"))

        waiting = cluster.job_status("j2")
        assert waiting["phase"] == "Pending"
        assert "limit" in waiting["reason"]
        assert "host h1" in waiting["reason"]
        assert "migration:default/j2" not in cluster.claims()
        # Reconsidering it while the first is still in flight changes nothing.
        await cluster.job_event("j2")
        assert cluster.job_status("j2")["phase"] == "Pending"

        cluster.kube.agent_job_status(
            "default/j1", TARGET_AGENT, targetAgent={"ready": False, "message": "no disk"}
        )
        await cluster.job_event("j1")

        assert cluster.job_status("j1")["phase"] == "Failed"
        admitted = cluster.job_status("j2")
        assert admitted["phase"] == "Preparing"
        assert "reason" not in admitted
        assert cluster.claims()["migration:default/j2"] == "h2"

    asyncio.run(main())


def test_stale_event_of_an_admitted_job_does_not_free_its_slot(one_at_a_time: Cluster) -> None:
    cluster = one_at_a_time

    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1"), vm("b", host="h1")]
        )
        await cluster.create_job(job("j1", "a"))
        assert cluster.job_status("j1")["phase"] == "Preparing"
        # The watch catches up: first the version written by the label patch, no status yet.
        stale = cluster.kube.job("default/j1")
        del stale["status"]
        await cluster.controller.migrations.on_job("MODIFIED", stale)
        await cluster.create_job(job("j2", "b"))

        assert cluster.job_status("j2")["phase"] == "Pending"

    asyncio.run(main())


# -- preparing, running, and how it ends ------------------------------------------------------


def test_target_ready_starts_the_transfer(cluster: Cluster) -> None:
    async def main() -> None:
        await _two_hosts_one_vm(cluster)
        await cluster.create_job(job("j1", "a"))
        cluster.clock.advance(7)
        cluster.kube.agent_job_status("default/j1", TARGET_AGENT, targetAgent={"ready": True})
        await cluster.job_event("j1")

        status = cluster.job_status("j1")
        assert status["phase"] == "Running"
        assert status["startTime"] == "2024-05-01T12:00:07Z"
        assert status["targetAgent"] == {"ready": True}  # the agent's part is left alone
        assert (status["source"], status["target"]) == ("h1", "h2")

    asyncio.run(main())


def test_target_that_could_not_prepare_fails_the_job_and_frees_the_target(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await _two_hosts_one_vm(cluster)
        await cluster.create_job(job("j1", "a"))
        cluster.kube.agent_job_status(
            "default/j1", TARGET_AGENT, targetAgent={"ready": False, "message": "disk missing"}
        )
        await cluster.job_event("j1")

        status = cluster.job_status("j1")
        assert status["phase"] == "Failed"
        assert status["reason"] == "host h2 could not prepare: disk missing"
        assert cluster.claims() == {"default/a": "h1"}
        assert cluster.controller.state.usage("h2").vms == 0

    asyncio.run(main())


def test_transfer_succeeded_moves_the_vm_to_the_target(cluster: Cluster) -> None:
    async def main() -> None:
        await _running_job(cluster)
        cluster.clock.advance(30)
        cluster.kube.agent_job_status(
            "default/j1", SOURCE_AGENT, transfer={"state": "Succeeded", "message": "done"}
        )
        await cluster.job_event("j1")

        status = cluster.job_status("j1")
        assert status["phase"] == "Succeeded"
        assert status["completionTime"] == "2024-05-01T12:00:30Z"
        obj = cluster.kube.vm("default/a")
        assert obj["status"]["host"] == "h2"
        assert obj["status"]["phase"] == "Running"  # the agent's, untouched
        assert obj["metadata"]["labels"][HOST_LABEL] == "h2"
        assert obj["status"]["lastMigration"] == {
            "job": "j1",
            "source": "h1",
            "target": "h2",
            "completionTime": "2024-05-01T12:00:30Z",
        }
        scheduled = [c for c in obj["status"]["conditions"] if c["type"] == "Scheduled"]
        assert scheduled[0]["reason"] == "Migrated"
        assert cluster.claims() == {"default/a": "h2"}
        source = cluster.controller.state.usage("h1")
        assert (source.vms, source.vcpus, source.memory_mib) == (0, 0, 0)
        assert cluster.controller.state.usage("h2").vms == 1
        assert cluster.kube.reasons("a") == ["Migrating", "Migrated"]

        # The watch then delivers the moved VM: nothing more to do, the claim stays put.
        writes = len(cluster.kube.calls)
        await cluster.vm_event("a")
        assert cluster.claims() == {"default/a": "h2"}
        assert len(cluster.kube.calls) == writes

    asyncio.run(main())


@pytest.mark.parametrize("ending", ["Failed", "Cancelled"])
def test_transfer_that_did_not_succeed_frees_the_target_and_leaves_the_vm(
    cluster: Cluster, ending: str
) -> None:
    async def main() -> None:
        await _running_job(cluster)
        before = cluster.kube.vm("default/a")
        cluster.kube.agent_job_status(
            "default/j1", SOURCE_AGENT, transfer={"state": ending, "message": "aborted"}
        )
        await cluster.job_event("j1")

        status = cluster.job_status("j1")
        assert status["phase"] == ending
        assert status["reason"] == "aborted"
        assert cluster.claims() == {"default/a": "h1"}
        assert cluster.controller.state.usage("h2").vms == 0
        assert cluster.kube.vm("default/a") == before
        assert "apply_vm_status" not in {method for method, _ in cluster.kube.calls}

    asyncio.run(main())


def test_running_transfer_is_left_to_the_source(cluster: Cluster) -> None:
    async def main() -> None:
        await _running_job(cluster)
        writes = len(cluster.kube.calls)
        cluster.kube.agent_job_status(
            "default/j1", SOURCE_AGENT, progress={"percent": 40}, transfer={"state": "Running"}
        )
        await cluster.job_event("j1")

        assert cluster.job_status("j1")["phase"] == "Running"
        assert len(cluster.kube.calls) == writes
        assert cluster.claims()["migration:default/j1"] == "h2"

    asyncio.run(main())


def test_target_lost_while_preparing_fails_the_job(cluster: Cluster) -> None:
    async def main() -> None:
        await _two_hosts_one_vm(cluster)
        await cluster.create_job(job("j1", "a"))
        cluster.clock.advance(41)  # both leases expire; only h1 renews
        cluster.controller.remember_lease(lease("h1", cluster.clock.now))
        await cluster.controller.check_host("h1")
        await cluster.controller.check_host("h2")

        status = cluster.job_status("j1")
        assert status["phase"] == "Failed"
        assert status["reason"] == "host h2 is not Ready"
        assert "migration:default/j1" not in cluster.claims()

    asyncio.run(main())


# -- cancel and deletion ---------------------------------------------------------------------


def test_cancel_while_preparing_frees_the_target(cluster: Cluster) -> None:
    async def main() -> None:
        await _two_hosts_one_vm(cluster)
        await cluster.create_job(job("j1", "a"))
        cluster.kube.change_job("default/j1", {"spec": {"cancel": True}})
        await cluster.job_event("j1")

        status = cluster.job_status("j1")
        assert status["phase"] == "Cancelled"
        assert status["reason"] == "cancelled before the transfer started"
        assert cluster.claims() == {"default/a": "h1"}
        assert cluster.kube.reasons("a") == ["Migrating", "MigrationCancelled"]

    asyncio.run(main())


def test_cancel_while_pending_never_claims(one_at_a_time: Cluster) -> None:
    cluster = one_at_a_time

    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")], vms=[vm("a", host="h1"), vm("b", host="h1")]
        )
        await cluster.create_job(job("j1", "a", created="2024-05-01T12:00:00Z"))
        await cluster.create_job(job("j2", "b", created="2024-05-01T12:00:01Z"))
        assert cluster.job_status("j2")["phase"] == "Pending"
        cluster.kube.change_job("default/j2", {"spec": {"cancel": True}})
        await cluster.job_event("j2")

        assert cluster.job_status("j2")["phase"] == "Cancelled"
        assert "migration:default/j2" not in cluster.claims()
        assert cluster.job_status("j1")["phase"] == "Preparing"

    asyncio.run(main())


def test_cancel_of_a_job_not_yet_seen_cancels_it(cluster: Cluster) -> None:
    async def main() -> None:
        await _two_hosts_one_vm(cluster)
        await cluster.create_job(job("j1", "a", cancel=True))

        assert cluster.job_status("j1")["phase"] == "Cancelled"
        assert cluster.claims() == {"default/a": "h1"}

    asyncio.run(main())


def test_deleting_a_finished_job_removes_its_finalizer(cluster: Cluster) -> None:
    async def main() -> None:
        await _running_job(cluster)
        cluster.kube.agent_job_status("default/j1", SOURCE_AGENT, transfer={"state": "Failed"})
        await cluster.job_event("j1")
        assert cluster.kube.job("default/j1")["metadata"]["finalizers"] == [MIGRATION_FINALIZER]

        cluster.kube.change_job(
            "default/j1", {"metadata": {"deletionTimestamp": "2024-05-01T12:05:00Z"}}
        )
        await cluster.job_event("j1")

        assert "finalizers" not in cluster.kube.job("default/j1")["metadata"]

    asyncio.run(main())


def test_deleting_a_preparing_job_cancels_it_then_lets_it_go(cluster: Cluster) -> None:
    async def main() -> None:
        await _two_hosts_one_vm(cluster)
        await cluster.create_job(job("j1", "a"))
        cluster.kube.change_job(
            "default/j1", {"metadata": {"deletionTimestamp": "2024-05-01T12:05:00Z"}}
        )
        await cluster.job_event("j1")
        assert cluster.job_status("j1")["phase"] == "Cancelled"
        assert "migration:default/j1" not in cluster.claims()

        await cluster.job_event("j1")  # the watch delivers the Cancelled write
        assert "finalizers" not in cluster.kube.job("default/j1")["metadata"]

        await cluster.controller.migrations.on_job("DELETED", cluster.kube.job("default/j1"))
        assert "default/j1" not in cluster.controller.migrations.jobs

    asyncio.run(main())


# -- restart ---------------------------------------------------------------------------------


def test_restart_reclaims_the_target_of_a_running_job(cluster: Cluster) -> None:
    in_flight = {
        "phase": "Running",
        "source": "h1",
        "target": "h2",
        "targetPlacement": {},
        "startTime": "2024-05-01T11:59:00Z",
        "transfer": {"state": "Running"},
    }

    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")],
            vms=[vm("a", host="h1")],
            jobs=[job("j1", "a", status=in_flight)],
        )
        assert cluster.claims() == {"default/a": "h1", "migration:default/j1": "h2"}
        assert cluster.controller.state.usage("h2").memory_mib == 1024

        # And the job carries on from there.
        cluster.kube.agent_job_status("default/j1", AGENT, transfer={"state": "Succeeded"})
        await cluster.job_event("j1")
        assert cluster.job_status("j1")["phase"] == "Succeeded"
        assert cluster.claims() == {"default/a": "h2"}
        assert cluster.kube.vm("default/a")["status"]["host"] == "h2"

    asyncio.run(main())


def test_restart_does_not_claim_for_finished_jobs(cluster: Cluster) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[host("h1"), host("h2")],
            vms=[vm("a", host="h1")],
            jobs=[job("j1", "a", status={"phase": "Failed", "source": "h1", "target": "h2"})],
        )
        assert cluster.claims() == {"default/a": "h1"}

    asyncio.run(main())
