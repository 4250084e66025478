"""Domain XML: golden files for representative VMs, and no way to inject XML."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core import domain
from kubevisor.core.domain import BootFiles, HostEnvironment, Ovmf

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("KUBEVISOR_UPDATE_GOLDEN") == "1"

TINY_BOOT = BootFiles(
    kernel="/var/lib/kubevisor/guest/vmlinuz",
    initrd="/var/lib/kubevisor/guest/initrd.gz",
    cmdline="console=ttyS0 quiet",
)


def vm(
    spec: dict[str, Any], *, status: dict[str, Any] | None = None, name: str = "web"
) -> VirtualMachine:
    return VirtualMachine.model_validate(
        {
            "metadata": {
                "namespace": "prod",
                "name": name,
                "uid": "6f1c1f9e-8a3b-4c55-9a55-0d7b5c2d1e01",
                "generation": 3,
            },
            "spec": spec,
            "status": status,
        }
    )


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
    xml = domain.render(machine, host=host) + "\n"
    if UPDATE:
        golden.write_text(xml)
    assert golden.exists(), f"{golden} missing: run with KUBEVISOR_UPDATE_GOLDEN=1 and review it"
    assert xml == golden.read_text()


def test_metadata_round_trips() -> None:
    machine = vm({"memory": {"size": "64Mi"}})
    xml = domain.render(machine, host=HostEnvironment(domain_type="qemu"))
    ref = domain.read_metadata(xml)
    assert ref == domain.VmRef(
        namespace="prod",
        name="web",
        uid="6f1c1f9e-8a3b-4c55-9a55-0d7b5c2d1e01",
        generation=3,
        hardware=domain.hardware_fingerprint(machine.spec),
    )


@pytest.mark.parametrize(
    ("change", "restart_needed"),
    [
        pytest.param({"cpu": {"vcpus": 2}}, True, id="vcpus"),
        pytest.param({"memory": {"size": "128Mi"}}, True, id="memory"),
        pytest.param({"runStrategy": "Halted"}, False, id="run-strategy"),
        pytest.param({"paused": True}, False, id="paused"),
        pytest.param({"placement": {"group": "g", "policy": "affinity"}}, False, id="placement"),
        pytest.param({"firmware": {"type": "uefi"}}, True, id="firmware"),
        pytest.param({"devices": {"pci": [{"alias": "gpu"}]}}, True, id="pci-devices"),
        pytest.param({"security": {"requireConfinement": True}}, True, id="security"),
        pytest.param({"memory": {"size": "64Mi", "balloon": {}}}, True, id="balloon"),
        pytest.param({"container": {"rootfs": "/srv/web"}}, True, id="container"),
    ],
)
def test_hardware_fingerprint_changes_only_with_restart_requiring_fields(
    change: dict[str, Any], restart_needed: bool
) -> None:
    before = vm({"memory": {"size": "64Mi"}})
    after = vm({"memory": {"size": "64Mi"}, **change})
    changed = domain.hardware_fingerprint(before.spec) != domain.hardware_fingerprint(after.spec)
    assert changed is restart_needed


def test_foreign_domain_has_no_kubevisor_metadata() -> None:
    assert domain.read_metadata("<domain type='qemu'><name>other</name></domain>") is None


HOSTILE = [
    pytest.param('a"b', id="double-quote"),
    pytest.param("x'><evil/><y a='", id="single-quote-and-element"),
    pytest.param("<devices><disk/></devices>", id="angle-brackets"),
    pytest.param("]]><evil/><![CDATA[", id="cdata-terminator"),
    pytest.param("&amp;&lt;", id="entities"),
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_cannot_change_the_structure(text: str) -> None:
    machine = VirtualMachine.model_validate(
        {
            "metadata": {"namespace": text, "name": text, "uid": "u", "generation": 1},
            "spec": {"memory": {"size": "64Mi"}, "boot": {"kernel": "/k", "cmdline": text}},
        }
    )
    xml = domain.render(machine, host=HostEnvironment(domain_type="qemu"))
    root = ET.fromstring(xml)
    assert root.find(".//evil") is None
    assert [child.tag for child in root].count("devices") == 1
    assert root.findtext("os/cmdline") == text
    assert root.findtext("name") == f"{text}_{text}"
    ref = domain.read_metadata(xml)
    assert ref is not None and (ref.namespace, ref.name) == (text, text)


@pytest.mark.parametrize(
    ("pci_devices", "message"),
    [
        pytest.param([], "2 requested, placement assigned 0", id="not-placed"),
        pytest.param(
            [{"alias": "gpu", "address": "0000:af:00.0"}],
            "2 requested, placement assigned 1",
            id="one-short",
        ),
        pytest.param(
            [{"alias": "gpu", "address": f"0000:af:00.{f}"} for f in range(3)],
            "2 requested, placement assigned 3",
            id="one-too-many",
        ),
    ],
)
def test_pci_devices_must_match_the_placement(
    pci_devices: list[dict[str, str]], message: str
) -> None:
    machine = vm(
        {"memory": {"size": "64Mi"}, "devices": {"pci": [{"alias": "gpu", "count": 2}]}},
        status={"placement": {"pciDevices": pci_devices}},
    )
    with pytest.raises(domain.DomainError, match=message):
        domain.render(machine, host=HostEnvironment(domain_type="kvm"))


@pytest.mark.parametrize(
    "security_model",
    [pytest.param(None, id="unknown"), pytest.param("none", id="none")],
)
def test_confinement_needs_a_security_driver(security_model: str | None) -> None:
    machine = vm({"memory": {"size": "64Mi"}, "security": {"requireConfinement": True}})
    host = HostEnvironment(domain_type="kvm", security_model=security_model)
    with pytest.raises(domain.DomainError, match="security driver"):
        domain.render(machine, host=host)


TUNED = {"memory": {"size": "64Mi"}, "cpu": {"tune": {"shares": 512, "quotaMicroseconds": 5000}}}


@pytest.mark.parametrize(
    ("spec", "controllers", "enforced"),
    [
        pytest.param(TUNED, None, True, id="unknown-controllers-assumed"),
        pytest.param(TUNED, frozenset({"cpu", "memory"}), True, id="cpu-controller"),
        pytest.param(TUNED, frozenset({"memory"}), False, id="no-cpu-controller"),
        pytest.param(TUNED, frozenset(), False, id="no-cgroups-at-all"),
        pytest.param({"memory": {"size": "64Mi"}}, frozenset(), True, id="nothing-to-enforce"),
    ],
)
def test_cpu_limits_are_left_out_and_reported_where_cgroups_cannot_enforce_them(
    spec: dict[str, Any], controllers: frozenset[str] | None, enforced: bool
) -> None:
    machine = vm(spec)
    host = HostEnvironment(domain_type="qemu", cgroup_controllers=controllers)
    root = ET.fromstring(domain.render(machine, host=host))
    has_limits = root.find("cputune/shares") is not None
    assert has_limits is (enforced and "cpu" in spec and "tune" in spec["cpu"])
    unenforced = domain.unenforced_limits(machine.spec, host)
    assert (unenforced == []) is enforced
    assert all("cpu.tune" in line for line in unenforced)


TWO_CELLS = vm(
    {
        "cpu": {"vcpus": 2, "policy": "dedicated"},
        "memory": {"size": "256Mi"},
        "numa": {"cells": [{"cpus": [0], "memory": "128Mi"}, {"cpus": [1], "memory": "128Mi"}]},
    },
    status={
        "placement": {
            "cells": [
                {"guestCell": 0, "hostCell": 0, "vcpuPins": [{"vcpu": 0, "pcpu": 0}]},
                {"guestCell": 1, "hostCell": 1, "vcpuPins": [{"vcpu": 1, "pcpu": 1}]},
            ]
        }
    },
)


@pytest.mark.parametrize(
    ("controllers", "mode"),
    [
        pytest.param(None, "strict", id="unknown-controllers-assumed"),
        pytest.param(frozenset({"cpuset", "memory"}), "strict", id="cpuset-controller"),
        pytest.param(frozenset({"cpu", "memory"}), "restrictive", id="no-cpuset-controller"),
        pytest.param(frozenset(), "restrictive", id="no-cgroups-at-all"),
    ],
)
def test_memory_is_bound_strictly_only_where_the_cpuset_controller_backs_it(
    controllers: frozenset[str] | None, mode: str
) -> None:
    """Strict binding without cpuset rests on QEMU's mbind alone, which fails the start on
    cells the kernel does not have (the testbed's synthetic ones); restrictive starts but
    binds nothing there, and says so."""
    host = HostEnvironment(domain_type="qemu", cgroup_controllers=controllers)
    root = ET.fromstring(domain.render(TWO_CELLS, host=host))
    memory = root.find("numatune/memory")
    assert memory is not None and (memory.get("mode"), memory.get("nodeset")) == (mode, "0-1")
    memnodes = [(m.get("cellid"), m.get("mode"), m.get("nodeset")) for m in root.iter("memnode")]
    assert memnodes == [("0", mode, "0"), ("1", mode, "1")]
    unbound = [line for line in domain.unenforced_limits(TWO_CELLS.spec, host) if "numa" in line]
    assert bool(unbound) is (mode == "restrictive")


@pytest.mark.parametrize(
    ("spec", "reported"),
    [
        pytest.param({"cpu": {"vcpus": 1, "policy": "dedicated"}}, True, id="dedicated"),
        pytest.param(
            {"memory": {"size": "64Mi", "hugepages": {"pageSize": "2Mi"}}}, True, id="hugepages"
        ),
        pytest.param({"cpu": {"vcpus": 1}}, False, id="shared-without-numa"),
    ],
)
def test_unbound_memory_is_reported_only_for_vms_placement_puts_on_cells(
    spec: dict[str, Any], reported: bool
) -> None:
    machine = vm({"memory": {"size": "64Mi"}, **spec})
    host = HostEnvironment(domain_type="qemu", cgroup_controllers=frozenset())
    unbound = [line for line in domain.unenforced_limits(machine.spec, host) if "numa" in line]
    assert bool(unbound) is reported


@pytest.mark.parametrize(
    ("vcpus", "queues"),
    [
        pytest.param(1, None, id="one-vcpu-no-queues"),
        pytest.param(4, "4", id="one-queue-per-vcpu"),
        pytest.param(256, "16", id="capped"),
    ],
)
def test_multiqueue_queues_follow_vcpus_up_to_the_cap(vcpus: int, queues: str | None) -> None:
    machine = vm(
        {
            "cpu": {"vcpus": vcpus},
            "memory": {"size": "64Mi"},
            "networks": [{"name": "n", "type": "bridge", "source": "br0", "multiqueue": True}],
        }
    )
    root = ET.fromstring(domain.render(machine, host=HostEnvironment(domain_type="kvm")))
    driver = root.find("devices/interface/driver")
    assert (driver.get("queues") if driver is not None else None) == queues


def test_disk_without_a_file_on_the_host_is_refused() -> None:
    machine = vm({"memory": {"size": "64Mi"}, "disks": [{"name": "root", "size": "1Gi"}]})
    with pytest.raises(domain.DomainError, match="root"):
        domain.render(machine, host=HostEnvironment(domain_type="qemu"))


@pytest.mark.parametrize(
    ("cpus", "expected"),
    [
        pytest.param([], "", id="empty"),
        pytest.param([3], "3", id="single"),
        pytest.param([0, 1, 2, 5], "0-2,5", id="range-and-single"),
        pytest.param([9, 8, 8, 1, 0], "0-1,8-9", id="unsorted-with-duplicates"),
    ],
)
def test_cpuset(cpus: list[int], expected: str) -> None:
    assert domain.cpuset(cpus) == expected


CONTAINER = {"memory": {"size": "64Mi"}, "container": {"rootfs": "/srv/web"}}
LXC = HostEnvironment(domain_type="lxc")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"container": None}, "container: required", id="no-container"),
        pytest.param({"firmware": {"type": "uefi"}}, "firmware: no UEFI", id="uefi"),
        pytest.param({"firmware": {"type": "bios", "secureBoot": False}}, None, id="plain-bios"),
        pytest.param(
            {"cpu": {"vcpus": 2, "policy": "dedicated"}}, "cpu.policy dedicated", id="dedicated"
        ),
        pytest.param({"cpu": {"model": "Skylake-Server"}}, "cpu.model", id="cpu-model"),
        pytest.param({"cpu": {"vcpus": 2, "sockets": 2}}, "sockets", id="cpu-topology"),
        pytest.param(
            {"cpu": {"vcpus": 2}, "numa": {"cells": [{"cpus": [0, 1], "memory": "64Mi"}]}},
            "numa: guest NUMA cells",
            id="numa-cells",
        ),
        pytest.param(
            {"memory": {"size": "64Mi", "hugepages": {"pageSize": "2Mi"}}},
            "memory.hugepages",
            id="hugepages",
        ),
        pytest.param({"memory": {"size": "64Mi", "balloon": {}}}, "balloon", id="balloon"),
        pytest.param({"disks": [{"name": "root", "size": "1Gi"}]}, "disks: block", id="disk"),
        pytest.param({"cloudInit": {"userData": "#cloud-config"}}, "cloudInit", id="cloud-init"),
        pytest.param({"networks": [{"name": "nat"}]}, "'nat': type user", id="user-network"),
        pytest.param({"devices": {"pci": [{"alias": "gpu"}]}}, "devices.pci", id="pci"),
        pytest.param({"security": {"requireSeccompSandbox": True}}, "QEMU's sandbox", id="seccomp"),
        pytest.param({"cpu": {"tune": {"shares": 100}}}, None, id="cpu-tune-is-fine"),
    ],
)
def test_a_container_refuses_what_only_a_guest_kernel_has(
    change: dict[str, Any], reason: str | None
) -> None:
    spec = {key: value for key, value in {**CONTAINER, **change}.items() if value is not None}
    machine = vm(spec)
    if reason is None:
        assert domain.container_unsupported(machine.spec) == []
        domain.render(machine, host=LXC)
        return
    with pytest.raises(domain.DomainError, match="system container") as refused:
        domain.render(machine, host=LXC)
    assert reason in str(refused.value)


def test_a_container_refusal_names_every_field_at_once() -> None:
    machine = vm(
        {
            **CONTAINER,
            "firmware": {"type": "uefi"},
            "disks": [{"name": "root", "size": "1Gi"}],
            "memory": {"size": "64Mi", "hugepages": {"pageSize": "2Mi"}},
        }
    )
    reasons = domain.container_unsupported(machine.spec)
    assert [r.split(":")[0] for r in reasons] == ["firmware", "disks", "memory.hugepages"]


def test_a_container_spec_on_a_vm_host_is_refused() -> None:
    # Not a VM booted from the agent's default kernel with the container ignored.
    with pytest.raises(domain.DomainError, match="needs a host of hypervisor type lxc"):
        domain.render(vm(CONTAINER), host=HostEnvironment(domain_type="qemu"))


def test_container_metadata_round_trips() -> None:
    machine = vm(CONTAINER)
    assert domain.read_metadata(domain.render(machine, host=LXC)) == domain.vm_ref(machine)


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_init_and_rootfs_stay_text(text: str) -> None:
    machine = vm({**CONTAINER, "container": {"rootfs": "/srv/" + text, "init": ["/init", text]}})
    root = ET.fromstring(domain.render(machine, host=LXC))
    assert root.findtext("os/initarg") == text
    source = root.find("devices/filesystem/source")
    assert source is not None and source.get("dir") == "/srv/" + text
    assert root.find(".//evil") is None


def test_a_container_without_networks_gets_a_network_namespace_of_its_own() -> None:
    root = ET.fromstring(domain.render(vm(CONTAINER), host=LXC))
    assert root.find("devices/interface") is None
    assert root.find("features/privnet") is not None
