"""The generated CRDs on a real kube-apiserver (tier 3): examples are accepted and
defaulted, invalid manifests are refused with the field named, printer columns, short
names, `kubectl explain`, and status subresource semantics."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from api.invalid_manifests import INVALID, Update, hvh, mig, provider, vm, vnet
from harness import REPO, eventually
from kubevisor.api import hypervisorhost, migrationjob, network, virtualmachine
from kubevisor.api.schema import ApiModel
from kubevisor.testbed.controlplane import ControlPlane

pytestmark = pytest.mark.apiserver

EXAMPLES = sorted((REPO / "deploy" / "examples").glob("*.yaml"))
NAMESPACE = "api-tier"
PLURALS = {
    "VirtualMachine": "virtualmachines.kubevisor.io",
    "HypervisorHost": "hypervisorhosts.kubevisor.io",
    "MigrationJob": "migrationjobs.kubevisor.io",
    "Network": "networks.kubevisor.io",
}
MODELS: dict[str, type[ApiModel]] = {
    "VirtualMachine": virtualmachine.VirtualMachine,
    "HypervisorHost": hypervisorhost.HypervisorHost,
    "MigrationJob": migrationjob.MigrationJob,
    "Network": network.Network,
}

T = TypeVar("T")


# ---- helpers --------------------------------------------------------------------------


def named(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    return {**manifest, "metadata": {**manifest.get("metadata", {}), "name": name}}


def apply(
    plane: ControlPlane, manifest: dict[str, Any], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return plane.kubectl(
        "apply", "-n", NAMESPACE, "-f", "-", check=check, input=json.dumps(manifest)
    )


def get(plane: ControlPlane, kind: str, name: str) -> dict[str, Any] | None:
    done = plane.kubectl(
        "get", PLURALS[kind], name, "-n", NAMESPACE, "-o", "json", "--ignore-not-found"
    )
    return json.loads(done.stdout) if done.stdout.strip() else None


def stored(plane: ControlPlane, kind: str, name: str) -> dict[str, Any]:
    found = get(plane, kind, name)
    assert found is not None, f"{kind} {name} is not stored"
    return found


def patch_status(plane: ControlPlane, kind: str, name: str, status: dict[str, Any]) -> None:
    plane.kubectl(
        "patch", PLURALS[kind], name, "-n", NAMESPACE, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip


def table(output: str) -> list[list[str]]:
    """kubectl's table output as rows of cells (columns are 2+ spaces apart)."""
    return [re.split(r"\s{2,}", line.strip()) for line in output.splitlines() if line.strip()]


def delete(plane: ControlPlane, kind: str, *names: str) -> None:
    plane.kubectl(
        "delete", PLURALS[kind], *names, "-n", NAMESPACE, "--ignore-not-found", "--wait=false"
    )


UNSTORED_DEFAULTS = frozenset(
    {"spec.cpu", "spec.cpu.vcpus", "spec.cpu.policy", "spec.disks[].cache"}
)
"""Defaults the models apply but the API server must not store: a VM and its flavor may
each set these, and a stored default would count as set (api.effective)."""


def assert_server_defaults_match_model(server: Any, model: Any, path: str = "spec") -> None:
    """Everything the server stored equals what the model computes (same defaults);
    what only the model has are empty lists (pydantic's default_factory=list) and the
    UNSTORED_DEFAULTS."""
    if isinstance(server, dict):
        assert isinstance(model, dict), path
        for key, value in server.items():
            assert key in model, f"{path}.{key} is stored but the model drops it"
            assert_server_defaults_match_model(value, model[key], f"{path}.{key}")
        for key in model.keys() - server.keys():
            if re.sub(r"\[\d+\]", "[]", f"{path}.{key}") in UNSTORED_DEFAULTS:
                continue
            assert model[key] in ([], {}), f"{path}.{key}: model default {model[key]!r} unstored"
    elif isinstance(server, list):
        assert isinstance(model, list) and len(server) == len(model), path
        for index, (left, right) in enumerate(zip(server, model, strict=True)):
            assert_server_defaults_match_model(left, right, f"{path}[{index}]")
    else:
        assert server == model, path


# ---- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plane(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """The session's control plane with this module's namespace; objects removed after.

    There is no namespace controller, so the namespace itself lingers; deleting our
    objects keeps a later controller in the same session from acting on them.
    """
    control_plane.kubectl("create", "namespace", NAMESPACE)
    yield control_plane
    # Not the `kubevisor` category: with --all it would also delete every (cluster-scoped)
    # HypervisorHost, including hosts other tiers' agents registered.
    control_plane.kubectl(
        "delete", "virtualmachines,migrationjobs,networks", "--all", "-n", NAMESPACE, "--wait=false"
    )
    control_plane.kubectl(
        "delete", "hypervisorhosts", "-l", "kubevisor.io/test=api-tier", "--wait=false"
    )
    control_plane.kubectl("delete", "namespace", NAMESPACE, "--wait=false")


def _label(manifest: dict[str, Any]) -> dict[str, Any]:
    labels = {**manifest.get("metadata", {}).get("labels", {}), "kubevisor.io/test": "api-tier"}
    return {**manifest, "metadata": {**manifest.get("metadata", {}), "labels": labels}}


# ---- examples -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in EXAMPLES])
def test_example_is_accepted_and_defaulted(plane: ControlPlane, path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for document in documents:
        apply(plane, _label(document))
    for document in documents:
        kind, name = document["kind"], document["metadata"]["name"]
        server = stored(plane, kind, name)
        model = MODELS[kind].model_validate(document)
        assert_server_defaults_match_model(server["spec"], model.model_dump(
            mode="json", by_alias=True, exclude_none=True
        )["spec"])  # fmt: skip
        MODELS[kind].model_validate(server)  # what the server stored reads back


def test_minimal_vm_gets_its_defaults(plane: ControlPlane) -> None:
    apply(plane, named(vm(), "defaults"))
    spec = stored(plane, "VirtualMachine", "defaults")["spec"]
    assert spec == {
        "runStrategy": "Always",
        "memory": {"size": "64Mi"},
        "evictionStrategy": "LiveMigrate",
        "paused": False,
    }


@pytest.mark.parametrize(
    "requirement",
    [
        pytest.param({"type": "lxc"}, id="one-type"),
        pytest.param({"types": ["kvm", "qemu"]}, id="a-set-of-types"),
    ],
)
def test_hypervisor_requirement_is_accepted(
    plane: ControlPlane, requirement: dict[str, Any]
) -> None:
    name = f"hypervisor-{len(requirement)}-{'-'.join(sorted(requirement))}"
    apply(plane, named(vm({"hypervisor": requirement}), name))
    assert stored(plane, "VirtualMachine", name)["spec"]["hypervisor"] == requirement


def test_nested_defaults(plane: ControlPlane) -> None:
    apply(
        plane,
        named(
            vm({"disks": [{"name": "root", "size": "1Gi"}], "networks": [{"name": "net0"}]}),
            "nested-defaults",
        ),
    )
    spec = stored(plane, "VirtualMachine", "nested-defaults")["spec"]
    assert spec["disks"] == [{"name": "root", "size": "1Gi", "bus": "virtio"}]
    assert spec["networks"] == [{"name": "net0", "type": "user", "model": "virtio"}]
    apply(plane, named(mig(), "mig-defaults"))
    assert stored(plane, "MigrationJob", "mig-defaults")["spec"] == {
        "vm": "minimal",
        "mode": "Live",
        "cancel": False,
        "options": {"completionTimeoutPerGiB": 150, "progressTimeout": 150},
    }
    apply(plane, _label(named(hvh({}), "host-defaults")))
    assert stored(plane, "HypervisorHost", "host-defaults")["spec"] == {
        "unschedulable": False,
        "maintenance": False,
    }


# ---- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(("manifest", "field"), INVALID)
def test_invalid_manifest_is_refused_naming_the_field(
    plane: ControlPlane,
    request: pytest.FixtureRequest,
    manifest: dict[str, Any] | Update,
    field: str,
) -> None:
    name: str = request.node.callspec.id
    if isinstance(manifest, Update):
        apply(plane, _label(named(manifest.before, name)))
        before = stored(plane, manifest.before["kind"], name)
        kind, attempt = manifest.after["kind"], _label(named(manifest.after, name))
    else:
        before, kind, attempt = None, manifest["kind"], _label(named(manifest, name))
    done = apply(plane, attempt, check=False)
    assert done.returncode != 0, f"accepted: {done.stdout}"
    assert field in done.stderr, done.stderr
    after = get(plane, kind, name)
    if before is None:
        assert after is None, "refused, yet stored"
    else:
        assert after is not None and after["spec"] == before["spec"]
        delete(plane, kind, name)


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        pytest.param(vm({"memory": {"size": "1e999999999"}}), "spec.memory.size", id="memory"),
        pytest.param(
            vm({"memory": {"size": "1e999999999.0"}}), "spec.memory.size", id="memory-variant"
        ),
        pytest.param(
            vm({"disks": [{"name": "d", "size": "1e999999999"}]}),
            "spec.disks[0].size",
            id="disk",
        ),
        pytest.param(
            vm({"memory": {"size": "1e999999999", "hugepages": {"pageSize": "2Mi"}}}),
            "spec.memory.size",
            id="hugepage-rule",
        ),
        pytest.param(
            vm(
                {
                    "cpu": {"vcpus": 2},
                    "memory": {"size": "1e999999999"},
                    "numa": {
                        "cells": [
                            {"cpus": [0], "memory": "1e999999999"},
                            {"cpus": [1], "memory": "1e99999999"},
                        ]
                    },
                }
            ),
            "spec.numa.cells[0].memory",
            id="numa-rule",
        ),
        pytest.param(
            hvh({"reserved": {"memory": "1e999999999"}}), "spec.reserved.memory", id="reserved"
        ),
    ],
)
def test_huge_exponents_are_refused_at_once_in_plain_words(
    plane: ControlPlane, request: pytest.FixtureRequest, manifest: dict[str, Any], field: str
) -> None:
    name = f"exponent-{request.node.callspec.id}"
    started = time.monotonic()
    done = plane.kubectl(
        "create", "--dry-run=server", "-n", NAMESPACE, "-f", "-",
        input=json.dumps(_label(named(manifest, name))), check=False,
    )  # fmt: skip
    assert time.monotonic() - started < 2.0
    assert done.returncode != 0
    assert f"{field}: Invalid value" in done.stderr, done.stderr
    assert "must be a size such as 512Mi or 2Gi" in done.stderr
    assert "should match" not in done.stderr


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"allocationRatios": {"cpu": 100, "memory": 100, "disk": 100}}, id="ratios"),
        pytest.param({"reserved": {"cpu": 8192, "memory": "4Ei", "disk": "4Ei"}}, id="reserved"),
        pytest.param({"cpuDedicatedSet": "4-7", "cpuSharedSet": "0-3,8-8191"}, id="adjacent"),
        pytest.param(
            {
                "cpuDedicatedSet": ",".join(str(cpu) for cpu in range(0, 128, 2)),
                "cpuSharedSet": ",".join(str(cpu) for cpu in range(1, 128, 2)),
            },
            id="64-interleaved-entries",
        ),
    ],
)
def test_admin_bounds_accept_their_edges(
    plane: ControlPlane, request: pytest.FixtureRequest, spec: dict[str, Any]
) -> None:
    name = f"edges-{request.node.callspec.id}"
    apply(plane, _label(named(hvh(spec), name)))
    stored_spec = stored(plane, "HypervisorHost", name)["spec"]
    assert {key: stored_spec[key] for key in spec} == spec
    hypervisorhost.HypervisorHostSpec.model_validate(stored_spec)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"cpu": {"model": "Skylake-Server \u00e9"}}, id="cpu-model-accent"),
        pytest.param(
            {
                "disks": [
                    {
                        "name": "d",
                        "source": {"url": "https://example.org/a\u00a0b.img", "sha256": "a" * 64},
                    }
                ]
            },
            # RE2's \s is ASCII only, pydantic's is Unicode: a `[^\s]` pattern let the
            # API server store a URL the model then refused.
            id="url-with-a-unicode-space",
        ),
    ],
)
def test_unicode_the_server_stores_the_model_reads(
    plane: ControlPlane, request: pytest.FixtureRequest, spec: dict[str, Any]
) -> None:
    name = f"unicode-{request.node.callspec.id}"
    apply(plane, named(vm(spec), name))
    virtualmachine.VirtualMachine.model_validate(stored(plane, "VirtualMachine", name))


def test_the_table_is_large_enough() -> None:
    assert len(INVALID) >= 25


# ---- kubectl get / explain ------------------------------------------------------------


def test_vm_printer_columns(plane: ControlPlane) -> None:
    # No controller runs here: the flavor is only a name to show.
    spec = {"cpu": {"vcpus": 2}, "memory": {"size": "128Mi"}, "flavor": {"name": "m1.small"}}
    apply(plane, named(vm(spec), "columns"))
    patch_status(
        plane,
        "VirtualMachine",
        "columns",
        {
            "phase": "Running",
            "host": "host-a",
            "conditions": [{"type": "Ready", "status": "True"}],
            "placement": {
                "size": {
                    "fingerprint": "0" * 16,
                    "vcpus": 2,
                    "cpuPolicy": "shared",
                    "memory": "128Mi",
                }
            },
        },
    )
    header, row = table(plane.kubectl("get", "vm", "columns", "-n", NAMESPACE).stdout)
    assert header == ["NAME", "PHASE", "HOST", "VCPUS", "MEMORY", "FLAVOR", "AGE"]
    assert row[:6] == ["columns", "Running", "host-a", "2", "128Mi", "m1.small"]
    header, row = table(plane.kubectl("get", "vm", "columns", "-n", NAMESPACE, "-o", "wide").stdout)
    assert header == [
        "NAME", "PHASE", "HOST", "VCPUS", "MEMORY", "FLAVOR", "AGE", "READY", "CPU POLICY",
        "GROUP", "IP",
    ]  # fmt: skip
    assert row[7:9] == ["True", "shared"]


def test_hypervisorhost_printer_columns(plane: ControlPlane) -> None:
    apply(plane, _label(named(hvh({}), "columns-host")))
    patch_status(
        plane,
        "HypervisorHost",
        "columns-host",
        {
            "hypervisor": {"type": "qemu"},
            "allocated": {"cpu": 3, "memory": "192Mi"},
            "allocatable": {"cpu": 16, "memory": "7Gi"},
            "vmCount": 2,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    )
    header, row = table(plane.kubectl("get", "hvh", "columns-host").stdout)
    assert header == [
        "NAME", "READY", "HYPERVISOR", "CPU ALLOCATED", "CPU ALLOCATABLE",
        "MEMORY ALLOCATED", "MEMORY ALLOCATABLE", "VMS", "AGE",
    ]  # fmt: skip
    assert row[:8] == ["columns-host", "True", "qemu", "3", "16", "192Mi", "7Gi", "2"]


def test_migrationjob_printer_columns(plane: ControlPlane) -> None:
    apply(plane, named(mig(), "columns-mig"))
    patch_status(
        plane,
        "MigrationJob",
        "columns-mig",
        {"phase": "Running", "source": "host-a", "target": "host-b", "progress": {"percent": 42}},
    )
    header, row = table(plane.kubectl("get", "vmmig", "columns-mig", "-n", NAMESPACE).stdout)
    assert header == ["NAME", "VM", "SOURCE", "TARGET", "PHASE", "PROGRESS", "AGE"]
    assert row[:6] == ["columns-mig", "minimal", "host-a", "host-b", "Running", "42"]


def test_vm_wide_columns_show_the_first_address(plane: ControlPlane) -> None:
    apply(plane, named(vm({"networks": [{"name": "eth0", "network": "blue"}]}), "columns-ip"))
    interfaces = [
        {"name": "eth0", "network": "blue", "macAddress": "02:00:00:00:00:01",
         "ipAddresses": ["10.0.0.7"]},
    ]  # fmt: skip
    patch_status(plane, "VirtualMachine", "columns-ip", {"interfaces": interfaces})
    out = plane.kubectl("get", "vm", "columns-ip", "-n", NAMESPACE, "-o", "wide").stdout
    header, row = table(out)
    assert header[-1] == "IP" and row[-1] == "10.0.0.7"


def test_network_printer_columns(plane: ControlPlane) -> None:
    apply(plane, named(vnet(), "columns-overlay"))
    patch_status(plane, "Network", "columns-overlay", {"vni": 4100, "used": 3, "free": 250})
    apply(plane, named(provider(), "columns-provider"))
    out = plane.kubectl("get", "vnet", "columns-overlay", "columns-provider", "-n", NAMESPACE)
    header, *rows = table(out.stdout)
    assert header == ["NAME", "TYPE", "CIDR", "USED", "FREE", "AGE"]
    assert rows[0][:5] == ["columns-overlay", "overlay", "10.0.0.0/24", "3", "250"]
    assert rows[1][:3] == ["columns-provider", "provider", "10.0.0.0/24"]
    wide = plane.kubectl(
        "get", "vnet", "columns-overlay", "columns-provider", "-n", NAMESPACE, "-o", "wide"
    ).stdout
    header, overlay, provider_row = (
        re.split(r"\s{2,}", line.strip()) for line in wide.splitlines()
    )
    assert header[5:] == ["AGE", "READY", "VNI", "PHYSICAL NETWORK", "VLAN"]
    assert overlay[-1] == "4100"
    assert provider_row[-2:] == ["phys", "100"]


def test_category_lists_every_kind(plane: ControlPlane) -> None:
    apply(plane, named(vm(), "category-vm"))
    apply(plane, named(mig(), "category-mig"))
    apply(plane, named(vnet(), "category-vnet"))
    names = plane.kubectl("get", "kubevisor", "-n", NAMESPACE, "-o", "name").stdout.split()
    assert "network.kubevisor.io/category-vnet" in names
    assert "virtualmachine.kubevisor.io/category-vm" in names
    assert "migrationjob.kubevisor.io/category-mig" in names


@pytest.mark.parametrize(
    ("field", "text"),
    [
        pytest.param(
            "virtualmachine.spec.cpu",
            virtualmachine.VirtualMachineSpec.model_fields["cpu"].description,
            id="vm-cpu",
        ),
        pytest.param(
            "vm.spec.cpu.threadPolicy",
            virtualmachine.Cpu.model_fields["thread_policy"].description,
            id="vm-cpu-thread-policy",
        ),
        pytest.param(
            "hvh.spec.allocationRatios.cpu",
            hypervisorhost.AllocationRatios.model_fields["cpu"].description,
            id="host-cpu-ratio",
        ),
        pytest.param(
            "vm.spec.disks.cache",
            virtualmachine.Disk.model_fields["cache"].description,
            id="vm-disk-cache",
        ),
        pytest.param(
            "hvh.spec.pciPassthrough.productId",
            hypervisorhost.PciPassthroughRule.model_fields["product_id"].description,
            id="host-pci-passthrough-product",
        ),
        pytest.param(
            "vnet.spec.subnet.allocationPools",
            network.Subnet.model_fields["allocation_pools"].description,
            id="network-allocation-pools",
        ),
        pytest.param(
            "vm.spec.networks.macAddress",
            virtualmachine.Network.model_fields["mac_address"].description,
            id="vm-network-mac",
        ),
        pytest.param(
            "hvh.spec.networkMappings.interface",
            hypervisorhost.NetworkMapping.model_fields["interface"].description,
            id="host-network-mapping-interface",
        ),
        pytest.param(
            "vmmig.spec.options.completionTimeoutPerGiB",
            migrationjob.MigrationOptions.model_fields["completion_timeout_per_gi_b"].description,
            id="migration-completion-timeout",
        ),
    ],
)
def test_explain_prints_the_descriptions(plane: ControlPlane, field: str, text: str) -> None:
    def explained() -> str | None:
        # The API server publishes a new CRD's OpenAPI a moment after it is Established.
        done = plane.kubectl("explain", field, check=False)
        return done.stdout if done.returncode == 0 else None

    output = eventually(explained, timeout=30, what=f"kubectl explain {field}")
    assert " ".join(text.split()) in " ".join(output.split())


# ---- status subresource ---------------------------------------------------------------

FULL_STATUS: dict[str, dict[str, Any]] = {
    "VirtualMachine": {
        "phase": "Running",
        "host": "host-a",
        "placement": {
            "cells": [
                {
                    "guestCell": 0,
                    "hostCell": 1,
                    "vcpuPins": [{"vcpu": 0, "pcpu": 6}],
                    "memory": "64Mi",
                    "hugepages": {"pageSize": "2Mi", "count": 32},
                }
            ],
            "emulatorPins": [7],
            "sharedCpus": [0, 1],
            "pciDevices": [{"alias": "nic-vf", "address": "0000:3b:02.1"}],
        },
        "domain": {"uuid": "0b7f4c2e-0000-4000-8000-000000000001", "state": "running",
                   "reason": "booted"},
        "created": True,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Running", "message": "guest runs",
             "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 1},
        ],
        "observedGeneration": 1,
        "restartCount": 2,
        "lastMigration": {"job": "m1", "source": "host-b", "target": "host-a",
                          "completionTime": "2026-01-02T03:00:00Z"},
        "interfaces": [{"name": "eth0", "network": "blue", "macAddress": "02:5e:10:aa:bb:cc",
                        "ipAddresses": ["10.0.0.10"]}],
    },
    "HypervisorHost": {
        "hypervisor": {"type": "kvm", "version": "7.2.0", "libvirtVersion": "9.0.0"},
        "libvirtURI": "qemu:///system",
        "cpu": {"model": "Skylake-Server", "vendor": "Intel", "features": ["vmx", "avx2"],
                "sockets": 1, "cores": 4, "threads": 2},
        "capacity": {"cpu": 8, "memory": "16Gi", "disk": "100Gi"},
        "numaCells": [
            {"id": 0, "cpus": [0, 1, 2, 3], "siblings": [[0, 1], [2, 3]], "memory": "8Gi",
             "hugepages": [{"pageSize": "2Mi", "total": 512, "free": 500}]},
        ],
        "allocatable": {"cpu": 28, "memory": "15Gi", "disk": "90Gi"},
        "allocated": {"cpu": 2, "memory": "128Mi", "disk": "0"},
        "vmCount": 1,
        "capabilities": {"uefi": True, "secureBoot": True, "vhostNet": False,
                         "securityDriver": "apparmor", "seccompSandbox": True,
                         "cgroupControllers": ["cpu", "cpuset", "memory"]},
        "storage": {"capacity": "100Gi", "available": "80Gi", "provisioned": "150Gi",
                    "used": "12Gi"},
        "ksm": {"running": True, "pagesShared": 1200, "pagesSharing": 5400},
        "pciDevices": [{"address": "0000:3b:02.1", "vendorId": "8086", "productId": "154c",
                        "numaCell": 0, "alias": "nic-vf"}],
        "network": {"tunnelEndpoint": "192.0.2.11"},
        "conditions": [{"type": "Ready", "status": "True"},
                       {"type": "Schedulable", "status": "True"}],
        "observedGeneration": 1,
    },
    "MigrationJob": {
        "phase": "Running",
        "source": "host-a",
        "target": "host-b",
        "progress": {"dataTotal": 134217728, "dataProcessed": 67108864,
                     "dataRemaining": 67108864, "iteration": 1, "bandwidthBps": 1048576,
                     "percent": 50},
        "startTime": "2026-01-02T03:04:05Z",
        "reason": "InProgress",
        "conditions": [{"type": "Reconciling", "status": "True", "reason": "Migrating"}],
        "observedGeneration": 1,
    },
    "Network": {
        "vni": 4096,
        "used": 3,
        "free": 250,
        "dhcpPorts": [{"host": "host-a", "ipAddress": "10.0.0.2"},
                      {"host": "host-b", "ipAddress": "10.0.0.3"}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "Allocated"}],
        "observedGeneration": 1,
    },
}  # fmt: skip

OBJECTS = {
    "VirtualMachine": vm(),
    "HypervisorHost": hvh({}),
    "MigrationJob": mig(),
    "Network": vnet(),
}


@pytest.mark.parametrize("kind", list(FULL_STATUS))
def test_status_subresource_keeps_every_declared_field(plane: ControlPlane, kind: str) -> None:
    name = f"status-{kind.lower()}"
    apply(plane, _label(named(OBJECTS[kind], name)))
    patch_status(plane, kind, name, FULL_STATUS[kind])
    # Nothing pruned: the status schema declares every field the writers use.
    assert stored(plane, kind, name)["status"] == FULL_STATUS[kind]
    MODELS[kind].model_validate(stored(plane, kind, name))


def test_status_on_the_main_resource_is_ignored(plane: ControlPlane) -> None:
    apply(plane, named(vm(), "status-ignored"))
    patch_status(plane, "VirtualMachine", "status-ignored", {"phase": "Running", "host": "a"})
    generation = stored(plane, "VirtualMachine", "status-ignored")["metadata"]["generation"]

    plane.kubectl(
        "patch", "vm", "status-ignored", "-n", NAMESPACE, "--type=merge",
        "-p", json.dumps({"status": {"phase": "Failed", "host": "b"}}),
    )  # fmt: skip
    apply(plane, {**named(vm(), "status-ignored"), "status": {"phase": "Stopped"}})
    after = stored(plane, "VirtualMachine", "status-ignored")
    assert after["status"] == {"phase": "Running", "host": "a"}
    assert after["metadata"]["generation"] == generation


def test_spec_through_the_status_subresource_is_ignored(plane: ControlPlane) -> None:
    apply(plane, named(vm(), "spec-via-status"))
    plane.kubectl(
        "patch", "vm", "spec-via-status", "-n", NAMESPACE, "--subresource=status",
        "--type=merge", "-p", json.dumps({"spec": {"paused": True}, "status": {"phase": "Paused"}}),
    )  # fmt: skip
    after = stored(plane, "VirtualMachine", "spec-via-status")
    assert after["spec"]["paused"] is False
    assert after["status"]["phase"] == "Paused"


def test_generation_moves_with_spec_only(plane: ControlPlane) -> None:
    apply(plane, named(vm(), "generation"))
    first = stored(plane, "VirtualMachine", "generation")["metadata"]["generation"]
    patch_status(plane, "VirtualMachine", "generation", {"phase": "Pending"})
    assert stored(plane, "VirtualMachine", "generation")["metadata"]["generation"] == first
    apply(plane, named(vm({"paused": True}), "generation"))
    assert stored(plane, "VirtualMachine", "generation")["metadata"]["generation"] == first + 1


@pytest.mark.parametrize(
    ("status", "field"),
    [
        pytest.param({"phase": "Exploded"}, "status.phase", id="phase-unknown"),
        pytest.param(
            {"conditions": [{"type": "Ready", "status": "Maybe"}]},
            "status.conditions[0].status",
            id="condition-status-unknown",
        ),
        pytest.param(
            {
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "Ready", "status": "False"},
                ]
            },
            "status.conditions[1]",
            id="condition-type-twice",
        ),
        pytest.param({"restartCount": -1}, "status.restartCount", id="restart-count-negative"),
    ],
)
def test_invalid_status_is_refused(
    plane: ControlPlane, request: pytest.FixtureRequest, status: dict[str, Any], field: str
) -> None:
    name = f"bad-status-{request.node.callspec.id}"
    apply(plane, named(vm(), name))
    done = plane.kubectl(
        "patch", "vm", name, "-n", NAMESPACE, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}), check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert field in done.stderr, done.stderr
