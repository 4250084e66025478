"""The controller's placement of new VMs (handlers/controller.py) on a fake API server."""

from __future__ import annotations

import asyncio

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
