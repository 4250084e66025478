"""The table of manifests the API server must refuse, shared by the model tests (which
mirror the cheap rules) and the API-server tests (which check the real CRD schema).

Each case is one mistake in an otherwise valid object, because the API server skips CEL
rules once a schema check has failed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest

Manifest = dict[str, Any]
API_VERSION = "kubevisor.io/v1alpha1"


@dataclass(frozen=True)
class Update:
    """Create `before`, then apply `after` to it (for immutable and one-way fields)."""

    before: Manifest
    after: Manifest


def _merge(base: Manifest, patch: Manifest) -> Manifest:
    merged = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def vm(spec: Manifest | None = None, *, replace: Manifest | None = None) -> Manifest:
    """A valid 64Mi VirtualMachine with `spec` merged in (or `replace` as the whole spec)."""
    body = replace if replace is not None else _merge({"memory": {"size": "64Mi"}}, spec or {})
    return {"apiVersion": API_VERSION, "kind": "VirtualMachine", "metadata": {}, "spec": body}


def hvh(spec: Manifest) -> Manifest:
    """A HypervisorHost with `spec`."""
    return {"apiVersion": API_VERSION, "kind": "HypervisorHost", "metadata": {}, "spec": spec}


REDFISH = {"address": "https://10.0.0.5", "credentialsSecret": "bmc-h1"}
IPMI = {"address": "10.0.0.5", "credentialsSecret": "bmc-h1"}


def fenced(**fencing: Manifest) -> Manifest:
    """A HypervisorHost with `spec.fencing` (redfish=..., ipmi=...)."""
    return hvh({"fencing": fencing})


def mig(spec: Manifest | None = None, *, replace: Manifest | None = None) -> Manifest:
    """A valid MigrationJob of VM "minimal" with `spec` merged in."""
    body = replace if replace is not None else _merge({"vm": "minimal"}, spec or {})
    return {"apiVersion": API_VERSION, "kind": "MigrationJob", "metadata": {}, "spec": body}


def vnet(spec: Manifest | None = None, *, replace: Manifest | None = None) -> Manifest:
    """A valid overlay Network on 10.0.0.0/24 with `spec` merged in."""
    base = {"type": "overlay", "subnet": {"cidr": "10.0.0.0/24"}}
    body = replace if replace is not None else _merge(base, spec or {})
    return {"apiVersion": API_VERSION, "kind": "Network", "metadata": {}, "spec": body}


def provider(spec: Manifest | None = None) -> Manifest:
    """A valid provider Network (physical network phys, VLAN 100) with `spec` merged in."""
    base = {"type": "provider", "provider": {"physicalNetwork": "phys", "vlan": 100}}
    return vnet(_merge(base, spec or {}))


def nic(**fields: Any) -> Manifest:
    """A VM with one interface `eth0` carrying `fields`."""
    return vm({"networks": [{"name": "eth0", **fields}]})


def cells(*parts: tuple[list[int], str]) -> Manifest:
    return {"cells": [{"cpus": cpus, "memory": memory} for cpus, memory in parts]}


# Cases the pydantic models accept on purpose: lax coercion ("2" -> 2), unknown fields
# ignored for forward compatibility, and rules about changes (only the server sees both
# the old and the new object).
MODELS_ALLOW = frozenset(
    {
        "vcpus-as-string",
        "paused-as-string",
        "unknown-spec-field",
        "migration-vm-is-immutable",
        "migration-target-host-is-immutable",
        "migration-cancel-cannot-be-undone",
        "migration-mode-is-immutable",
        # Read so that the controller can report them on the host (InvalidCpuSets).
        "cpusets-overlap",
        "cpusets-overlap-on-one-cpu",
        "network-type-is-immutable",
        "network-cidr-is-immutable",
        "network-provider-is-immutable",
        "network-vni-is-immutable",
    }
)

INVALID = [
    # --- VirtualMachine: types, sizes, enums --------------------------------------------
    pytest.param(vm(replace={}), "spec.memory", id="memory-missing"),
    pytest.param(vm(replace={"memory": {}}), "spec.memory.size", id="memory-size-missing"),
    pytest.param(vm({"memory": {"size": "-64Mi"}}), "spec.memory.size", id="memory-negative"),
    pytest.param(vm({"memory": {"size": "0"}}), "spec.memory.size", id="memory-zero"),
    pytest.param(vm({"memory": {"size": "lots"}}), "spec.memory.size", id="memory-not-a-quantity"),
    pytest.param(vm({"memory": {"size": 67108864}}), "spec.memory.size", id="memory-as-number"),
    pytest.param(
        vm({"memory": {"size": "1e999999999"}}), "spec.memory.size", id="memory-huge-exponent"
    ),
    pytest.param(
        vm({"memory": {"size": "1e999999999.0"}}),
        "spec.memory.size",
        id="memory-fractional-exponent",
    ),
    pytest.param(vm({"memory": {"size": "9Ei"}}), "spec.memory.size", id="memory-above-4ei"),
    pytest.param(vm({"memory": {"size": "1Ki"}}), "spec.memory.size", id="memory-below-16mi"),
    pytest.param(vm({"cpu": {"vcpus": 0}}), "spec.cpu.vcpus", id="vcpus-zero"),
    pytest.param(vm({"cpu": {"vcpus": 1000}}), "spec.cpu.vcpus", id="vcpus-too-many"),
    pytest.param(vm({"cpu": {"vcpus": "two"}}), "spec.cpu.vcpus", id="vcpus-as-string"),
    pytest.param(vm({"runStrategy": "Sometimes"}), "spec.runStrategy", id="run-strategy-unknown"),
    pytest.param(vm({"cpu": {"policy": "exclusive"}}), "spec.cpu.policy", id="cpu-policy-unknown"),
    pytest.param(
        vm({"evictionStrategy": "Teleport"}), "spec.evictionStrategy", id="eviction-unknown"
    ),
    pytest.param(vm({"paused": "yes"}), "spec.paused", id="paused-as-string"),
    pytest.param(vm({"cpus": 2}), "spec.cpus", id="unknown-spec-field"),
    # --- VirtualMachine: CPU cross-field rules ------------------------------------------
    pytest.param(
        vm({"cpu": {"threadPolicy": "isolate"}}),
        "spec.cpu.threadPolicy",
        id="thread-policy-needs-dedicated",
    ),
    pytest.param(
        vm({"cpu": {"isolateEmulatorThread": True}}),
        "spec.cpu.isolateEmulatorThread",
        id="emulator-thread-needs-dedicated",
    ),
    pytest.param(
        vm({"cpu": {"vcpus": 4, "sockets": 1, "cores": 3}}),
        "spec.cpu.vcpus",
        id="topology-does-not-multiply-to-vcpus",
    ),
    # --- VirtualMachine: memory and NUMA ------------------------------------------------
    pytest.param(
        vm({"memory": {"hugepages": {"pageSize": "4Mi"}}}),
        "spec.memory.hugepages.pageSize",
        id="hugepage-size-unknown",
    ),
    pytest.param(
        vm({"memory": {"size": "65Mi", "hugepages": {"pageSize": "2Mi"}}}),
        "spec.memory.size",
        id="memory-not-whole-hugepages",
    ),
    pytest.param(
        vm({"cpu": {"vcpus": 2}, "numa": cells(([0], "64Mi"))}),
        "spec.numa.cells",
        id="numa-cpus-do-not-add-up",
    ),
    pytest.param(
        vm({"cpu": {"vcpus": 2}, "numa": cells(([0], "16Mi"), ([1], "16Mi"))}),
        "spec.numa.cells",
        id="numa-memory-does-not-add-up",
    ),
    pytest.param(
        vm({"cpu": {"vcpus": 2}, "numa": cells(([0], "32Mi"), ([1], "33554431.5"))}),
        "spec.numa.cells",
        id="numa-memory-not-whole-bytes",
    ),
    pytest.param(
        vm({"cpu": {"vcpus": 2}, "numa": cells(([0], "32Mi"), ([1], "1e999999999"))}),
        "spec.numa.cells[1].memory",
        id="numa-memory-huge-exponent",
    ),
    pytest.param(
        vm({"cpu": {"vcpus": 2}, "numa": cells(([0], "32Mi"), ([2], "32Mi"))}),
        "spec.numa.cells",
        id="numa-vcpu-out-of-range",
    ),
    pytest.param(
        vm({"cpu": {"vcpus": 2}, "numa": cells(([0], "32Mi"), ([0], "32Mi"))}),
        "spec.numa.cells",
        id="numa-vcpu-in-two-cells",
    ),
    pytest.param(
        vm({"numa": {"cells": []}}),
        "spec.numa.cells",
        id="numa-no-cells",
    ),
    pytest.param(
        vm(
            {
                "cpu": {"vcpus": 9},
                "memory": {"size": "72Mi"},
                "numa": cells(*[([i], "8Mi") for i in range(9)]),
            }
        ),
        "spec.numa.cells",
        id="numa-too-many-cells",
    ),
    # --- VirtualMachine: disks, networks, placement -------------------------------------
    pytest.param(
        vm({"disks": [{"name": "root", "size": "1Gi"}, {"name": "root", "size": "2Gi"}]}),
        "spec.disks[1]",
        id="disk-names-not-unique",
    ),
    pytest.param(
        vm({"disks": [{"name": "root", "size": "1Gi", "bus": "ide"}]}),
        "spec.disks[0].bus",
        id="disk-bus-unknown",
    ),
    pytest.param(
        vm({"disks": [{"name": "root", "size": "-1Gi"}]}),
        "spec.disks[0].size",
        id="disk-size-negative",
    ),
    pytest.param(
        vm({"disks": [{"name": "root", "size": "1e99999999"}]}),
        "spec.disks[0].size",
        id="disk-size-huge-exponent",
    ),
    pytest.param(
        vm({"disks": [{"name": "root"}]}),
        "spec.disks[0]",
        id="disk-without-image-or-size",
    ),
    pytest.param(
        vm({"disks": [{"name": "Root_Disk", "size": "1Gi"}]}),
        "spec.disks[0].name",
        id="disk-name-not-a-dns-label",
    ),
    pytest.param(
        vm({"disks": [{"name": "root", "source": {"url": "http://images.example/a.qcow2"}}]}),
        "spec.disks[0].source.sha256",
        id="disk-source-without-sha256",
    ),
    pytest.param(
        vm(
            {"disks": [{"name": "root", "source": {"url": "http://i.example/a", "sha256": "AB12"}}]}
        ),
        "spec.disks[0].source.sha256",
        id="disk-source-sha256-not-64-lowercase-hex",
    ),
    pytest.param(
        vm(
            {
                "disks": [
                    {
                        "name": "root",
                        "image": "a.qcow2",
                        "source": {"url": "http://i.example/a.qcow2", "sha256": "0" * 64},
                    }
                ]
            }
        ),
        "spec.disks[0].source",
        id="disk-with-both-image-and-source",
    ),
    pytest.param(
        vm(
            {
                "disks": [
                    {"name": "root", "source": {"url": "ftp://i.example/a", "sha256": "0" * 64}}
                ]
            }
        ),
        "spec.disks[0].source.url",
        id="disk-source-url-not-http",
    ),
    pytest.param(
        vm({"networks": [{"name": "net0", "type": "vxlan"}]}),
        "spec.networks[0].type",
        id="network-type-unknown",
    ),
    pytest.param(
        vm({"networks": [{"name": "net0", "type": "bridge"}]}),
        "spec.networks[0].source",
        id="bridge-without-source",
    ),
    pytest.param(
        vm({"networks": [{"name": "net0", "type": "bridge", "source": "br0\n"}]}),
        "spec.networks[0].source",
        id="bridge-name-with-newline",
    ),
    pytest.param(vm({"cpu": {"model": "\x1f"}}), "spec.cpu.model", id="cpu-model-control-char"),
    pytest.param(
        vm({"cpu": {"features": ["vmx\x00"]}}), "spec.cpu.features[0]", id="cpu-feature-nul"
    ),
    pytest.param(
        vm({"boot": {"kernel": "/boot/vmlinuz", "cmdline": "console=ttyS0\uffff"}}),
        "spec.boot.cmdline",
        id="kernel-cmdline-xml-noncharacter",
    ),
    pytest.param(
        vm(
            {
                "hypervisor": {"type": "lxc"},
                "container": {"rootfs": "/srv/root", "init": ["/sbin/init", "-\x07"]},
            }
        ),
        "spec.container.init[1]",
        id="container-init-argument-bell",
    ),
    pytest.param(
        vm({"placement": {"group": "web", "policy": "spread"}}),
        "spec.placement.policy",
        id="group-policy-unknown",
    ),
    pytest.param(
        vm({"placement": {"policy": "anti-affinity"}}),
        "spec.placement.group",
        id="group-policy-without-group",
    ),
    pytest.param(
        vm({"placement": {"group": "web", "policy": "anti-affinity", "maxPerHost": 0}}),
        "spec.placement.maxPerHost",
        id="max-per-host-zero",
    ),
    pytest.param(
        vm({"placement": {"group": "web", "policy": "anti-affinity", "maxPerHost": 10**9}}),
        "spec.placement.maxPerHost",
        id="max-per-host-huge",
    ),
    pytest.param(
        vm({"placement": {"group": "Web Servers"}}),
        "spec.placement.group",
        id="group-not-a-dns-label",
    ),
    pytest.param(
        vm({"placement": {"group": "../../etc"}}), "spec.placement.group", id="group-path-trick"
    ),
    pytest.param(vm({"placement": {"group": "g" * 64}}), "spec.placement.group", id="group-long"),
    pytest.param(
        vm({"placement": {"hostSelector": {f"k{i}": "v" for i in range(65)}}}),
        "spec.placement.hostSelector",
        id="host-selector-too-many-labels",
    ),
    pytest.param(
        vm({"placement": {"group": "web", "policy": "affinity", "maxPerHost": 2}}),
        "spec.placement.maxPerHost",
        id="max-per-host-without-anti-affinity",
    ),
    # --- VirtualMachine: tuning and hardening knobs -------------------------------------
    pytest.param(
        vm({"disks": [{"name": "root", "size": "1Gi", "cache": "fast"}]}),
        "spec.disks[0].cache",
        id="disk-cache-unknown",
    ),
    pytest.param(
        vm({"disks": [{"name": "root", "size": "1Gi", "io": "aio"}]}),
        "spec.disks[0].io",
        id="disk-io-unknown",
    ),
    pytest.param(
        vm({"disks": [{"name": "root", "size": "1Gi", "cache": "writeback", "io": "native"}]}),
        "spec.disks[0].io",
        id="disk-io-native-with-writeback-cache",
    ),
    pytest.param(
        vm({"disks": [{"name": "root", "size": "1Gi", "cache": "unsafe", "io": "native"}]}),
        "spec.disks[0].io",
        id="disk-io-native-with-unsafe-cache",
    ),
    pytest.param(
        vm({"disks": [{"name": "root", "size": "1Gi", "discard": "trim"}]}),
        "spec.disks[0].discard",
        id="disk-discard-unknown",
    ),
    pytest.param(
        vm(
            {
                "networks": [
                    {
                        "name": "net0",
                        "type": "bridge",
                        "source": "br0",
                        "model": "e1000",
                        "multiqueue": True,
                    }
                ]
            }
        ),
        "spec.networks[0].multiqueue",
        id="multiqueue-needs-virtio",
    ),
    pytest.param(
        vm({"networks": [{"name": "net0", "multiqueue": True}]}),
        "spec.networks[0].multiqueue",
        id="multiqueue-needs-a-tap-device",
    ),
    pytest.param(
        vm({"memory": {"balloon": {"statsPeriodSeconds": -1}}}),
        "spec.memory.balloon.statsPeriodSeconds",
        id="balloon-stats-period-negative",
    ),
    pytest.param(
        vm({"memory": {"balloon": {"statsPeriodSeconds": 86400}}}),
        "spec.memory.balloon.statsPeriodSeconds",
        id="balloon-stats-period-too-long",
    ),
    pytest.param(
        vm({"cpu": {"features": ["avx2"], "disabledFeatures": ["avx2"]}}),
        "spec.cpu.disabledFeatures",
        id="cpu-feature-required-and-disabled",
    ),
    pytest.param(
        vm({"cpu": {"policy": "dedicated", "tune": {"shares": 2048}}}),
        "spec.cpu.tune",
        id="cpu-tune-needs-shared-policy",
    ),
    pytest.param(
        vm({"cpu": {"tune": {"shares": 1}}}),
        "spec.cpu.tune.shares",
        id="cpu-shares-too-small",
    ),
    pytest.param(
        vm({"cpu": {"tune": {"periodMicroseconds": 999}}}),
        "spec.cpu.tune.periodMicroseconds",
        id="cpu-period-too-short",
    ),
    pytest.param(
        vm({"cpu": {"tune": {"quotaMicroseconds": 0}}}),
        "spec.cpu.tune.quotaMicroseconds",
        id="cpu-quota-zero",
    ),
    pytest.param(
        vm({"firmware": {"type": "coreboot"}}),
        "spec.firmware.type",
        id="firmware-type-unknown",
    ),
    pytest.param(
        vm({"firmware": {"secureBoot": True}}),
        "spec.firmware.secureBoot",
        id="secure-boot-needs-uefi",
    ),
    pytest.param(
        vm({"hypervisor": {"type": "xen"}}),
        "spec.hypervisor.type",
        id="hypervisor-type-unknown",
    ),
    pytest.param(
        vm({"hypervisor": {"type": "kvm", "types": ["kvm", "qemu"]}}),
        "spec.hypervisor",
        id="hypervisor-type-and-types",
    ),
    pytest.param(vm({"hypervisor": {}}), "spec.hypervisor", id="hypervisor-without-type"),
    pytest.param(
        vm({"hypervisor": {"types": []}}), "spec.hypervisor.types", id="hypervisor-types-empty"
    ),
    pytest.param(
        vm({"hypervisor": {"types": ["lxc", "lxc"]}}),
        "spec.hypervisor.types",
        id="hypervisor-types-repeated",
    ),
    pytest.param(
        vm({"container": {"rootfs": "/srv/web", "init": ["/bin/sh"]}, "boot": {"kernel": "/k"}}),
        "spec.container",
        id="container-with-kernel-boot",
    ),
    pytest.param(
        vm({"container": {"rootfs": "srv/web"}}),
        "spec.container.rootfs",
        id="container-rootfs-relative",
    ),
    pytest.param(
        vm({"container": {"rootfs": "/"}}), "spec.container.rootfs", id="rootfs-host-root"
    ),
    pytest.param(
        vm({"container": {"rootfs": "/srv/containers/../../"}}),
        "spec.container.rootfs",
        id="rootfs-dot-dot",
    ),
    pytest.param(
        vm({"boot": {"kernel": "../../etc/shadow"}}), "spec.boot.kernel", id="kernel-relative"
    ),
    pytest.param(
        vm({"boot": {"kernel": "/var/lib/kubevisor/boot/../../../etc/shadow"}}),
        "spec.boot.kernel",
        id="kernel-dot-dot",
    ),
    pytest.param(vm({"boot": {"kernel": "/boot/./vmlinuz"}}), "spec.boot.kernel", id="kernel-dot"),
    pytest.param(
        vm({"boot": {"kernel": "/boot/vmlinuz", "initrd": "//server/initrd"}}),
        "spec.boot.initrd",
        id="initrd-double-slash",
    ),
    pytest.param(
        vm({"boot": {"kernel": "/boot/"}}), "spec.boot.kernel", id="kernel-trailing-slash"
    ),
    pytest.param(
        vm({"container": {"rootfs": "/srv/web", "init": []}}),
        "spec.container.init",
        id="container-init-empty",
    ),
    pytest.param(
        vm({"devices": {"pci": [{"alias": "GPU_A100"}]}}),
        "spec.devices.pci[0].alias",
        id="pci-alias-not-a-dns-label",
    ),
    pytest.param(
        vm({"devices": {"pci": [{"alias": "gpu", "count": 0}]}}),
        "spec.devices.pci[0].count",
        id="pci-count-zero",
    ),
    pytest.param(
        vm({"devices": {"pci": [{"alias": "gpu"}, {"alias": "gpu", "count": 2}]}}),
        "spec.devices.pci[1]",
        id="pci-alias-twice",
    ),
    # --- HypervisorHost -----------------------------------------------------------------
    pytest.param(
        hvh({"allocationRatios": {"cpu": 0}}), "spec.allocationRatios.cpu", id="cpu-ratio-zero"
    ),
    pytest.param(
        hvh({"allocationRatios": {"memory": -1.5}}),
        "spec.allocationRatios.memory",
        id="memory-ratio-negative",
    ),
    pytest.param(hvh({"reserved": {"cpu": -1}}), "spec.reserved.cpu", id="reserved-cpu-negative"),
    pytest.param(
        hvh({"reserved": {"memory": "half"}}),
        "spec.reserved.memory",
        id="reserved-memory-not-a-quantity",
    ),
    pytest.param(
        hvh({"reserved": {"memory": "1e999999999"}}),
        "spec.reserved.memory",
        id="reserved-memory-huge-exponent",
    ),
    pytest.param(hvh({"cpuDedicatedSet": "0-3;8"}), "spec.cpuDedicatedSet", id="cpuset-bad-syntax"),
    pytest.param(
        hvh({"allocationRatios": {"cpu": 1e308}}), "spec.allocationRatios.cpu", id="cpu-ratio-huge"
    ),
    pytest.param(
        hvh({"allocationRatios": {"disk": 100.5}}),
        "spec.allocationRatios.disk",
        id="disk-ratio-above-100",
    ),
    pytest.param(hvh({"reserved": {"cpu": 10**12}}), "spec.reserved.cpu", id="reserved-cpu-huge"),
    pytest.param(
        hvh({"reserved": {"memory": "9Ei"}}), "spec.reserved.memory", id="reserved-memory-huge"
    ),
    pytest.param(
        hvh({"cpuDedicatedSet": "0-4294967295"}),
        "spec.cpuDedicatedSet",
        id="cpuset-four-billion-cpus",
    ),
    pytest.param(hvh({"cpuDedicatedSet": "0-8192"}), "spec.cpuDedicatedSet", id="cpuset-cpu-8192"),
    pytest.param(hvh({"cpuSharedSet": "7-2"}), "spec.cpuSharedSet", id="cpuset-range-backwards"),
    pytest.param(
        hvh({"cpuSharedSet": ",".join(["1"] * 65)}),
        "spec.cpuSharedSet",
        id="cpuset-65-entries",
    ),
    pytest.param(
        hvh({"cpuDedicatedSet": "0-3,8", "cpuSharedSet": "4-8"}),
        "spec.cpuSharedSet",
        id="cpusets-overlap",
    ),
    pytest.param(
        hvh({"cpuDedicatedSet": "2", "cpuSharedSet": "0-1,2-2,3"}),
        "spec.cpuSharedSet",
        id="cpusets-overlap-on-one-cpu",
    ),
    pytest.param(
        hvh({"pciPassthrough": [{"vendorId": "0x8086", "alias": "nic"}]}),
        "spec.pciPassthrough[0].vendorId",
        id="pci-vendor-id-not-four-hex-digits",
    ),
    pytest.param(
        hvh({"pciPassthrough": [{"vendorId": "8086", "productId": "154C", "alias": "nic"}]}),
        "spec.pciPassthrough[0].productId",
        id="pci-product-id-upper-case",
    ),
    pytest.param(
        hvh({"pciPassthrough": [{"vendorId": "8086"}]}),
        "spec.pciPassthrough[0].alias",
        id="pci-passthrough-without-alias",
    ),
    # --- HypervisorHost: power fencing -----------------------------------------------------
    pytest.param(hvh({"fencing": {}}), "spec.fencing", id="fencing-without-a-bmc"),
    pytest.param(fenced(redfish=REDFISH, ipmi=IPMI), "spec.fencing", id="fencing-redfish-and-ipmi"),
    pytest.param(
        fenced(redfish={**REDFISH, "address": "10.0.0.5"}),
        "spec.fencing.redfish.address",
        id="redfish-address-without-scheme",
    ),
    pytest.param(
        fenced(redfish={**REDFISH, "address": "https://10.0.0.5/redfish/v1"}),
        "spec.fencing.redfish.address",
        id="redfish-address-with-a-path",
    ),
    pytest.param(
        fenced(redfish={**REDFISH, "systemId": "/redfish/v1/Systems/1"}),
        "spec.fencing.redfish.systemId",
        id="redfish-system-id-a-path",
    ),
    pytest.param(
        fenced(redfish={"address": "https://10.0.0.5"}),
        "spec.fencing.redfish.credentialsSecret",
        id="redfish-without-credentials",
    ),
    pytest.param(
        fenced(ipmi={**IPMI, "address": "https://10.0.0.5"}),
        "spec.fencing.ipmi.address",
        id="ipmi-address-a-url",
    ),
    pytest.param(fenced(ipmi={**IPMI, "port": 0}), "spec.fencing.ipmi.port", id="ipmi-port-zero"),
    pytest.param(
        fenced(ipmi={**IPMI, "credentialsSecret": "BMC_h1"}),
        "spec.fencing.ipmi.credentialsSecret",
        id="ipmi-secret-not-an-object-name",
    ),
    # --- VirtualMachine: interfaces on Networks, host networks ---------------------------
    pytest.param(
        nic(network="blue", type="bridge", source="br0"),
        "spec.networks[0].network",
        id="network-and-bridge",
    ),
    pytest.param(
        nic(network="blue", source="br0"), "spec.networks[0].network", id="network-and-source"
    ),
    pytest.param(nic(network="Blue"), "spec.networks[0].network", id="network-name-not-dns"),
    pytest.param(nic(ipAddress="10.0.0.5"), "spec.networks[0].ipAddress", id="ip-without-network"),
    pytest.param(
        nic(network="blue", ipAddress="10.0.0.256"),
        "spec.networks[0].ipAddress",
        id="ip-octet-too-large",
    ),
    pytest.param(
        nic(network="blue", ipAddress="10.0.0.05"),
        "spec.networks[0].ipAddress",
        id="ip-leading-zero",
    ),
    pytest.param(
        nic(network="blue", ipAddress="fd00::5"), "spec.networks[0].ipAddress", id="ip-not-ipv4"
    ),
    pytest.param(
        nic(network="blue", macAddress="03:00:00:00:00:01"),
        "spec.networks[0].macAddress",
        id="mac-multicast",
    ),
    pytest.param(
        nic(network="blue", macAddress="02:00:00:00:00:0A"),
        "spec.networks[0].macAddress",
        id="mac-upper-case",
    ),
    pytest.param(
        nic(network="blue", macAddress="02-00-00-00-00-0a"),
        "spec.networks[0].macAddress",
        id="mac-dashes",
    ),
    pytest.param(
        nic(network="blue", macAddress="00:00:00:00:00:00"),
        "spec.networks[0].macAddress",
        id="mac-zero",
    ),
    pytest.param(
        vm(
            {
                "networks": [
                    {"name": "a", "network": "blue", "macAddress": "02:00:00:00:00:01"},
                    {"name": "b", "network": "red", "macAddress": "02:00:00:00:00:01"},
                ]
            }
        ),
        "spec.networks",
        id="mac-twice-in-one-vm",
    ),
    pytest.param(
        hvh({"networkMappings": [{"physicalNetwork": "phys", "interface": "eth/1"}]}),
        "spec.networkMappings[0].interface",
        id="mapping-interface-with-slash",
    ),
    pytest.param(
        hvh({"networkMappings": [{"physicalNetwork": "phys", "interface": "a-very-long-name0"}]}),
        "spec.networkMappings[0].interface",
        id="mapping-interface-too-long",
    ),
    pytest.param(
        hvh({"networkMappings": [{"physicalNetwork": "phys", "interface": ".."}]}),
        "spec.networkMappings[0].interface",
        id="mapping-interface-dot-dot",
    ),
    pytest.param(
        hvh({"networkMappings": [{"physicalNetwork": "Phys_1", "interface": "eth1"}]}),
        "spec.networkMappings[0].physicalNetwork",
        id="mapping-physical-network-not-dns",
    ),
    pytest.param(hvh({"hostNetworks": [""]}), "spec.hostNetworks[0]", id="host-network-empty"),
    # --- Network ------------------------------------------------------------------------
    pytest.param(vnet({"type": "vlan"}), "spec.type", id="network-type-unknown"),
    pytest.param(vnet(replace={"type": "overlay"}), "spec.subnet", id="network-subnet-missing"),
    pytest.param(
        vnet({"subnet": {"cidr": "10.0.0.0"}}), "spec.subnet.cidr", id="network-cidr-no-prefix"
    ),
    pytest.param(
        vnet({"subnet": {"cidr": "10.0.0.1/24"}}), "spec.subnet.cidr", id="network-cidr-host-bits"
    ),
    pytest.param(
        vnet({"subnet": {"cidr": "10.0.0.0/31"}}), "spec.subnet.cidr", id="network-prefix-too-long"
    ),
    pytest.param(
        vnet({"subnet": {"cidr": "10.0.0.0/7"}}), "spec.subnet.cidr", id="network-prefix-too-short"
    ),
    pytest.param(
        vnet({"subnet": {"cidr": "fd00::/64"}}), "spec.subnet.cidr", id="network-cidr-ipv6"
    ),
    pytest.param(
        vnet({"subnet": {"gateway": "10.0.1.1"}}),
        "spec.subnet.gateway",
        id="network-gateway-outside-cidr",
    ),
    pytest.param(
        vnet({"subnet": {"gateway": "10.0.0.1.1"}}),
        "spec.subnet.gateway",
        id="network-gateway-not-an-address",
    ),
    pytest.param(
        vnet({"subnet": {"allocationPools": [{"start": "10.0.0.10", "end": "10.0.1.10"}]}}),
        "spec.subnet.allocationPools",
        id="network-pool-outside-cidr",
    ),
    pytest.param(
        vnet({"subnet": {"allocationPools": [{"start": "10.0.0.20", "end": "10.0.0.10"}]}}),
        "spec.subnet.allocationPools[0].end",
        id="network-pool-start-after-end",
    ),
    pytest.param(
        vnet({"subnet": {"allocationPools": [{"start": "10.0.0.20"}]}}),
        "spec.subnet.allocationPools[0].end",
        id="network-pool-without-end",
    ),
    pytest.param(
        vnet({"subnet": {"reserved": ["10.0.0.3", "192.168.0.1"]}}),
        "spec.subnet.reserved",
        id="network-reserved-outside-cidr",
    ),
    pytest.param(
        vnet({"subnet": {"dnsServers": ["8.8.8.8", "dns.example"]}}),
        "spec.subnet.dnsServers[1]",
        id="network-dns-server-not-an-address",
    ),
    pytest.param(
        vnet({"subnet": {"dnsServers": [f"10.0.0.{i}" for i in range(1, 7)]}}),
        "spec.subnet.dnsServers",
        id="network-too-many-dns-servers",
    ),
    pytest.param(vnet({"type": "provider"}), "spec.provider", id="network-provider-missing"),
    pytest.param(
        vnet({"provider": {"physicalNetwork": "phys"}}),
        "spec.provider",
        id="network-provider-on-an-overlay",
    ),
    pytest.param(
        provider({"overlay": {"vni": 5}}), "spec.overlay", id="network-overlay-on-a-provider"
    ),
    pytest.param(provider({"provider": {"vlan": 0}}), "spec.provider.vlan", id="network-vlan-0"),
    pytest.param(
        provider({"provider": {"vlan": 4095}}), "spec.provider.vlan", id="network-vlan-4095"
    ),
    pytest.param(vnet({"overlay": {"vni": 0}}), "spec.overlay.vni", id="network-vni-0"),
    pytest.param(vnet({"overlay": {"vni": 2**24}}), "spec.overlay.vni", id="network-vni-too-large"),
    pytest.param(
        Update(before=vnet(), after=provider()), "spec.type", id="network-type-is-immutable"
    ),
    pytest.param(
        Update(before=vnet(), after=vnet({"subnet": {"cidr": "10.0.1.0/24"}})),
        "spec.subnet.cidr",
        id="network-cidr-is-immutable",
    ),
    pytest.param(
        Update(before=provider(), after=provider({"provider": {"vlan": 101}})),
        "spec.provider",
        id="network-provider-is-immutable",
    ),
    pytest.param(
        Update(before=vnet(), after=vnet({"overlay": {"vni": 7}})),
        "spec.overlay",
        id="network-vni-is-immutable",
    ),
    # --- MigrationJob -------------------------------------------------------------------
    pytest.param(mig(replace={}), "spec.vm", id="migration-vm-missing"),
    pytest.param(
        mig({"options": {"bandwidthMiBps": -1}}),
        "spec.options.bandwidthMiBps",
        id="migration-bandwidth-negative",
    ),
    pytest.param(
        mig({"options": {"completionTimeoutPerGiB": 0}}),
        "spec.options.completionTimeoutPerGiB",
        id="migration-completion-timeout-zero",
    ),
    pytest.param(
        mig({"options": {"progressTimeout": 86401}}),
        "spec.options.progressTimeout",
        id="migration-progress-timeout-over-a-day",
    ),
    pytest.param(
        mig({"options": {"maxDowntimeMs": 2_000_001}}),
        "spec.options.maxDowntimeMs",
        id="migration-downtime-above-qemu-limit",
    ),
    pytest.param(
        mig({"options": {"bandwidthMiBps": 2**40}}),
        "spec.options.bandwidthMiBps",
        id="migration-bandwidth-huge",
    ),
    pytest.param(
        Update(before=mig(), after=mig({"vm": "other"})),
        "spec.vm",
        id="migration-vm-is-immutable",
    ),
    pytest.param(
        Update(before=mig({"targetHost": "host-a"}), after=mig({"targetHost": "host-b"})),
        "spec.targetHost",
        id="migration-target-host-is-immutable",
    ),
    pytest.param(
        Update(before=mig({"cancel": True}), after=mig({"cancel": False})),
        "spec.cancel",
        id="migration-cancel-cannot-be-undone",
    ),
    pytest.param(mig({"mode": "Frozen"}), "spec.mode", id="migration-mode-unknown"),
    pytest.param(
        mig({"mode": "Cold", "options": {"postCopy": True}}),
        "spec.options.postCopy",
        id="migration-cold-post-copy",
    ),
    pytest.param(
        mig({"mode": "Cold", "options": {"autoConverge": True}}),
        "spec.options.autoConverge",
        id="migration-cold-auto-converge",
    ),
    pytest.param(
        mig({"mode": "Cold", "options": {"maxDowntimeMs": 300}}),
        "spec.options.maxDowntimeMs",
        id="migration-cold-max-downtime",
    ),
    pytest.param(
        Update(before=mig(), after=mig({"mode": "Cold"})),
        "spec.mode",
        id="migration-mode-is-immutable",
    ),
]
