"""The controller's placement of new VMs (handlers/controller.py) on a fake API server."""

from __future__ import annotations

import asyncio
import logging

import pytest

from .fake_cluster import Cluster, host, vm


def test_a_mixed_cluster_binds_each_vm_to_a_host_of_a_type_that_runs_it(
    cluster: Cluster,
) -> None:
    async def main() -> None:
        await cluster.start(
            hosts=[
                host("kvm1"),
                host("ct1", hypervisor_type="lxc"),
                host("vc1", hypervisor_type="vmware"),
            ],
            vms=[
                vm("container", hypervisor={"type": "lxc"}, container={"rootfs": "/srv/ct"}),
                vm("esxi-app", hypervisor={"type": "vmware"}),
                vm("with-disk", disks=[{"name": "root", "size": "1Gi"}]),
                vm(
                    "pinned-container",
                    hypervisor={"type": "lxc"},
                    container={"rootfs": "/srv/ct"},
                    cpu={"policy": "dedicated"},
                ),
            ],
        )
        for name in ("container", "esxi-app", "with-disk", "pinned-container"):
            await cluster.vm_event(name)

        assert cluster.claims() == {
            "default/container": "ct1",
            "default/esxi-app": "vc1",
            "default/with-disk": "kvm1",
        }
        refused = cluster.vm_status("pinned-container")
        assert refused["phase"] == "Unschedulable"
        scheduled = next(c for c in refused["conditions"] if c["type"] == "Scheduled")
        assert scheduled["message"] == (
            "0/3 hosts fit: 2 hypervisor type is not lxc, "
            "1 lxc has no dedicated (pinned) vCPUs (spec.cpu.policy)"
        )

    asyncio.run(main())


def test_a_restart_holds_what_the_statuses_record_and_reports_what_it_cannot(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    pinned = host("h1")
    pinned["spec"]["cpuDedicatedSet"] = "0-7"
    on_pcpu_0 = {"cells": [{"guestCell": 0, "hostCell": 0, "vcpuPins": [{"vcpu": 0, "pcpu": 0}]}]}
    first, second, lost = (
        vm(name, host=target, cpu={"vcpus": 1, "policy": "dedicated"})
        for name, target in (("first", "h1"), ("second", "h1"), ("lost", "h9"))
    )
    for obj in (first, second):
        obj["status"]["placement"] = on_pcpu_0

    async def main() -> None:
        with caplog.at_level(logging.ERROR, logger="kubevisor.controller"):
            await cluster.start(hosts=[pinned, host("h2")], vms=[first, second, lost])

    asyncio.run(main())
    assert cluster.claims() == {"default/first": "h1"}
    assert cluster.controller.state.usage("h1").cells[0].pinned == {0}
    assert [r.getMessage() for r in caplog.records] == [
        "default/second: cannot rebuild its claim on h1: "
        "default/second pins pCPUs [0] already in use"
    ]


def test_a_host_whose_cpu_sets_name_cpus_it_lacks_is_unschedulable_and_says_which(
    cluster: Cluster,
) -> None:
    # The issue: cpuSharedSet 0-63 on an 8-CPU host let two 64-vCPU VMs be placed.
    async def main() -> None:
        bad = host("h1", cpus=8)
        bad["spec"]["cpuSharedSet"] = "0-63"
        await cluster.start(hosts=[bad], vms=[vm("a", vcpus=64), vm("b", vcpus=64)])
        await cluster.controller.check_host("h1")
        for name in ("a", "b"):
            await cluster.vm_event(name)

        conditions = cluster.kube.host("h1")["status"]["conditions"]
        schedulable = next(c for c in conditions if c["type"] == "Schedulable")
        assert (schedulable["status"], schedulable["reason"], schedulable["message"]) == (
            "False",
            "InvalidCpuSets",
            "spec.cpuSharedSet names CPUs 8-63 the host does not have (it has 0-7)",
        )
        assert cluster.claims() == {}
        assert cluster.vm_status("a")["phase"] == "Unschedulable"

    asyncio.run(main())
