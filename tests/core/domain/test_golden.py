"""Domain XML of representative VMs and a container, each against its golden file.

Run with KUBEVISOR_UPDATE_GOLDEN=1 to rewrite the files, then review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.domain import converter
from kubevisor.core.domain.host import HostEnvironment, Ovmf

from .builders import TINY_BOOT, vm

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("KUBEVISOR_UPDATE_GOLDEN") == "1"

CASES = [
    pytest.param(
        vm({"memory": {"size": "128Mi"}}),
        HostEnvironment(domain_type="qemu", default_boot=TINY_BOOT, serial_log="/run/kv/web.log"),
        id="minimal-direct-boot-tcg",
    ),
    pytest.param(
        vm(
            {
                "cpu": {
                    "vcpus": 4,
                    "sockets": 2,
                    "cores": 2,
                    "policy": "dedicated",
                    "threadPolicy": "prefer",
                    "isolateEmulatorThread": True,
                    "model": "host-passthrough",
                },
                "memory": {"size": "2Gi"},
                "numa": {
                    "cells": [
                        {"cpus": [0, 1], "memory": "1Gi"},
                        {"cpus": [2, 3], "memory": "1Gi"},
                    ]
                },
            },
            status={
                "placement": {
                    "cells": [
                        {
                            "guestCell": 0,
                            "hostCell": 0,
                            "vcpuPins": [{"vcpu": 0, "pcpu": 2}, {"vcpu": 1, "pcpu": 3}],
                            "memory": "1Gi",
                        },
                        {
                            "guestCell": 1,
                            "hostCell": 1,
                            "vcpuPins": [{"vcpu": 2, "pcpu": 18}, {"vcpu": 3, "pcpu": 19}],
                            "memory": "1Gi",
                        },
                    ],
                    "emulatorPins": [4],
                }
            },
        ),
        HostEnvironment(domain_type="kvm", default_boot=TINY_BOOT),
        id="dedicated-two-numa-cells-pinned-kvm",
    ),
    pytest.param(
        vm(
            {"cpu": {"vcpus": 2}, "memory": {"size": "1Gi", "hugepages": {"pageSize": "2Mi"}}},
            status={
                "placement": {
                    "cells": [
                        {
                            "guestCell": 0,
                            "hostCell": 1,
                            "memory": "1Gi",
                            "hugepages": {"pageSize": "2Mi", "count": 512},
                        }
                    ],
                    "sharedCpus": [0, 1, 2, 3, 8],
                }
            },
        ),
        HostEnvironment(domain_type="qemu", default_boot=TINY_BOOT),
        id="hugepages-shared-cpus",
    ),
    pytest.param(
        vm(
            {
                "cpu": {"vcpus": 2, "model": "Skylake-Server", "features": ["avx2"]},
                "memory": {"size": "512Mi"},
                "disks": [
                    {"name": "root", "image": "debian-12.qcow2", "size": "10Gi"},
                    {"name": "data", "size": "1Gi", "bus": "scsi", "readOnly": True},
                ],
                "cloudInit": {"userData": "#cloud-config\n"},
                "networks": [
                    {"name": "default"},
                    {"name": "storage", "type": "bridge", "source": "br0", "multiqueue": True},
                ],
            }
        ),
        HostEnvironment(
            domain_type="kvm",
            disk_paths={
                "root": "/var/lib/kv/prod_web-root.qcow2",
                "data": "/var/lib/kv/prod_web-data.qcow2",
            },
            seed_iso="/var/lib/kv/prod_web-seed.iso",
        ),
        id="disks-cloud-init-networks",
    ),
    # --- tuning and hardening knobs: one golden file each --------------------------------
    pytest.param(
        vm(
            {
                "memory": {"size": "256Mi"},
                "disks": [
                    {"name": "root", "image": "debian-12.qcow2", "io": "native"},
                    {"name": "logs", "size": "4Gi", "cache": "directsync", "io": "native"},
                    {"name": "scratch", "size": "8Gi", "cache": "unsafe", "io": "io_uring"},
                    {"name": "data", "size": "16Gi", "cache": "writeback", "discard": "unmap"},
                    {"name": "audit", "size": "1Gi", "cache": "writethrough", "io": "threads"},
                ],
            }
        ),
        HostEnvironment(
            domain_type="kvm",
            disk_paths={
                name: f"/var/lib/kv/prod_web-{name}.qcow2"
                for name in ("root", "logs", "scratch", "data", "audit")
            },
        ),
        id="disk-cache-and-io-modes",
    ),
    pytest.param(
        vm(
            {
                "cpu": {"vcpus": 24},
                "memory": {"size": "1Gi"},
                "networks": [
                    {"name": "fast", "type": "bridge", "source": "br0", "multiqueue": True},
                    {"name": "mgmt", "type": "network", "source": "default"},
                    {"name": "nat"},
                    {"name": "legacy", "type": "bridge", "source": "br1", "model": "e1000"},
                ],
            }
        ),
        HostEnvironment(domain_type="kvm", default_boot=TINY_BOOT, vhost_net=True),
        id="virtio-vhost-multiqueue-capped",
    ),
    pytest.param(
        vm({"memory": {"size": "512Mi", "balloon": {"statsPeriodSeconds": 5}}}),
        HostEnvironment(domain_type="qemu", default_boot=TINY_BOOT),
        id="memory-balloon-stats",
    ),
    pytest.param(
        vm(
            {
                "cpu": {
                    "vcpus": 2,
                    "model": "host-model",
                    "features": ["pcid"],
                    "disabledFeatures": ["hle", "rtm"],
                },
                "memory": {"size": "512Mi"},
            }
        ),
        HostEnvironment(domain_type="kvm", default_boot=TINY_BOOT),
        id="cpu-host-model-with-feature-flags",
    ),
    pytest.param(
        vm(
            {
                "cpu": {
                    "vcpus": 2,
                    "tune": {
                        "shares": 512,
                        "periodMicroseconds": 100000,
                        "quotaMicroseconds": 50000,
                    },
                },
                "memory": {"size": "512Mi"},
            },
            status={"placement": {"sharedCpus": [0, 1, 2, 3]}},
        ),
        HostEnvironment(
            domain_type="kvm", default_boot=TINY_BOOT, cgroup_controllers=frozenset({"cpu"})
        ),
        id="cpu-shares-and-quota",
    ),
    pytest.param(
        vm({"cpu": {"vcpus": 2}, "memory": {"size": "512Mi"}}),
        HostEnvironment(
            domain_type="kvm", default_boot=TINY_BOOT, shared_cpus=frozenset({0, 1, 2, 3, 8, 9})
        ),
        id="shared-vcpus-on-the-hosts-shared-set",
    ),
    pytest.param(
        vm({"memory": {"size": "256Mi"}, "firmware": {"type": "uefi"}}),
        HostEnvironment(
            domain_type="qemu",
            default_boot=TINY_BOOT,
            nvram="/var/lib/kv/prod_web-VARS.fd",
        ),
        id="uefi-ovmf",
    ),
    pytest.param(
        vm(
            {
                "memory": {"size": "256Mi"},
                "firmware": {"type": "uefi", "secureBoot": True},
                "security": {"requireConfinement": True, "requireSeccompSandbox": True},
            }
        ),
        HostEnvironment(
            domain_type="kvm",
            default_boot=TINY_BOOT,
            ovmf=Ovmf(
                secure_code="/opt/ovmf/CODE.secboot.fd",
                secure_vars_template="/opt/ovmf/VARS.ms.fd",
            ),
            security_model="apparmor",
        ),
        id="uefi-secure-boot-confined",
    ),
    pytest.param(
        vm(
            {
                "memory": {"size": "1Gi"},
                "devices": {"pci": [{"alias": "nic-vf", "count": 2}, {"alias": "gpu"}]},
            },
            status={
                "placement": {
                    "pciDevices": [
                        {"alias": "nic-vf", "address": "0000:3b:02.3"},
                        {"alias": "gpu", "address": "0000:af:00.0"},
                        {"alias": "nic-vf", "address": "0000:3b:02.1"},
                    ]
                }
            },
        ),
        HostEnvironment(domain_type="kvm", default_boot=TINY_BOOT),
        id="pci-passthrough-hostdevs",
    ),
    # --- system containers (libvirt LXC) --------------------------------------------------
    pytest.param(
        vm(
            {
                "cpu": {"vcpus": 2, "tune": {"shares": 512, "quotaMicroseconds": 50000}},
                "memory": {"size": "256Mi"},
                "container": {
                    "rootfs": "/srv/containers/web",
                    "init": ["/bin/sh", "-c", "exec httpd -f"],
                },
                "networks": [
                    {"name": "default", "type": "network", "source": "default"},
                    {"name": "storage", "type": "bridge", "source": "br-storage"},
                ],
                "security": {"requireConfinement": True},
            },
            status={"placement": {"sharedCpus": [0, 1, 2, 3]}},
        ),
        HostEnvironment(
            domain_type="lxc",
            serial_log="/run/kv/web.log",
            default_boot=TINY_BOOT,
            security_model="apparmor",
        ),
        id="lxc-container-limits-networks",
    ),
]


@pytest.mark.parametrize(("machine", "host"), CASES)
def test_domain_xml_matches_golden_file(
    machine: VirtualMachine, host: HostEnvironment, request: pytest.FixtureRequest
) -> None:
    golden = GOLDEN / f"{request.node.callspec.id}.xml"
    xml = converter.render(machine, host=host) + "\n"
    if UPDATE:
        golden.write_text(xml)
    assert golden.exists(), f"{golden} missing: run with KUBEVISOR_UPDATE_GOLDEN=1 and review it"
    assert xml == golden.read_text()
