"""System containers: what a container spec may not ask for, and its domain's shape."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from kubevisor.core import hypervisors
from kubevisor.core.domain import container, converter, identity
from kubevisor.core.domain.document import DomainError
from kubevisor.core.domain.host import HostEnvironment, IdRange
from kubevisor.core.hypervisors import Feature

from .builders import HOSTILE, vm

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
        assert container.unsupported(machine.spec) == []
        converter.render(machine, host=LXC)
        return
    with pytest.raises(DomainError, match="system container") as refused:
        converter.render(machine, host=LXC)
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
    reasons = container.unsupported(machine.spec)
    assert [r.split(":")[0] for r in reasons] == ["firmware", "disks", "memory.hugepages"]


def test_every_feature_lxc_lacks_has_a_reason() -> None:
    lacking = hypervisors.EVERYTHING - hypervisors.SUPPORTED["lxc"]
    # Live migration is never asked for by a spec; a drain moves the container cold.
    assert set(container.WHY_NOT) == lacking - {Feature.LIVE_MIGRATION}


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"firmware": {"type": "uefi", "secureBoot": True}}, id="secure-boot"),
        pytest.param({"cpu": {"features": ["avx2"]}}, id="cpu-flags"),
        pytest.param({"cpu": {"vcpus": 2, "threads": 2}}, id="cpu-topology"),
        pytest.param({"boot": {"kernel": "/k"}, "container": None}, id="kernel-boot"),
        pytest.param({"cpu": {"tune": {"shares": 100}}}, id="cpu-tune"),
        pytest.param({"networks": [{"name": "n", "type": "bridge", "source": "br0"}]}, id="veth"),
    ],
)
def test_a_container_is_refused_exactly_what_the_hypervisor_table_denies_lxc(
    change: dict[str, Any],
) -> None:
    spec = {key: value for key, value in {**CONTAINER, **change}.items() if value is not None}
    machine = vm(spec)
    denied = hypervisors.missing("lxc", hypervisors.requested(machine.spec))
    reasons = container.unsupported(machine.spec)
    assert bool(reasons) is bool(denied)
    assert len(reasons) == len({container.WHY_NOT[feature] for feature in denied})


def test_a_refusal_names_the_interfaces_that_ask() -> None:
    networks = [
        {"name": "nat"},
        {"name": "lan", "type": "bridge", "source": "br0"},
        {"name": "nat2", "multiqueue": False},
        {"name": "fast", "type": "bridge", "source": "br1", "multiqueue": True},
    ]
    reasons = container.unsupported(vm({**CONTAINER, "networks": networks}).spec)
    assert [r.split(":")[0] for r in reasons] == ["networks 'nat', 'nat2'", "networks 'fast'"]


def test_a_container_spec_on_a_vm_host_is_refused() -> None:
    # Not a VM booted from the agent's default kernel with the container ignored.
    with pytest.raises(DomainError, match="needs a host of hypervisor type lxc"):
        converter.render(vm(CONTAINER), host=HostEnvironment(domain_type="qemu"))


def test_container_metadata_round_trips() -> None:
    machine = vm(CONTAINER)
    assert identity.read_metadata(converter.render(machine, host=LXC)) == identity.vm_ref(machine)


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_init_and_rootfs_stay_text(text: str) -> None:
    machine = vm({**CONTAINER, "container": {"rootfs": "/srv/" + text, "init": ["/init", text]}})
    root = ET.fromstring(converter.render(machine, host=LXC))
    assert root.findtext("os/initarg") == text
    source = root.find("devices/filesystem/source")
    assert source is not None and source.get("dir") == "/srv/" + text
    assert root.find(".//evil") is None


def test_a_container_without_networks_gets_a_network_namespace_of_its_own() -> None:
    root = ET.fromstring(converter.render(vm(CONTAINER), host=LXC))
    assert root.find("devices/interface") is None
    assert root.find("features/privnet") is not None


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        pytest.param(IdRange(), ("0", "100000", "65536"), id="default-a-user-namespace"),
        pytest.param(IdRange(start=200000, count=1000), ("0", "200000", "1000"), id="a-range"),
        pytest.param(None, None, id="privileged-containers-allowed"),
    ],
)
def test_a_container_runs_in_a_user_namespace_unless_the_admin_allows_privileged_ones(
    ids: IdRange | None, expected: tuple[str, str, str] | None
) -> None:
    host = HostEnvironment(domain_type="lxc", container_ids=ids)
    root = ET.fromstring(converter.render(vm(CONTAINER), host=host))
    idmap = root.find("idmap")
    if expected is None:
        assert idmap is None
        return
    assert idmap is not None
    for kind in ("uid", "gid"):
        (mapping,) = idmap.findall(kind)
        assert (mapping.get("start"), mapping.get("target"), mapping.get("count")) == expected
