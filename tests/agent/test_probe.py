"""Host facts the agent reads itself: KSM, overlay storage, firmware and vhost-net, the
security driver, and the PCI devices its allow-list offers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kubevisor.agent import probe
from kubevisor.api.hypervisorhost import PciPassthroughRule
from kubevisor.core.domain.host import Ovmf
from kubevisor.drivers.base import PciDeviceInfo


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {"run": "1", "pages_shared": "12", "pages_sharing": "40"}, (True, 12, 40), id="running"
        ),
        pytest.param(
            {"run": "0", "pages_shared": "0", "pages_sharing": "0"}, (False, 0, 0), id="stopped"
        ),
        pytest.param({"run": "1"}, (True, None, None), id="counters-missing"),
    ],
)
def test_ksm(tmp_path: Path, files: dict[str, str], expected: tuple[object, ...]) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text + "\n")
    found = probe.ksm(tmp_path)
    assert found is not None
    assert (found.running, found.pages_shared, found.pages_sharing) == expected


def test_no_ksm_in_the_kernel(tmp_path: Path) -> None:
    assert probe.ksm(tmp_path / "absent") is None


def test_storage_counts_real_overlay_blocks_and_virtual_sizes(tmp_path: Path) -> None:
    overlay = tmp_path / "vm" / "disk-data.qcow2"
    overlay.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(overlay), "1G"], check=True)
    found = probe.storage(disk_root=tmp_path, virtual_bytes=1024**3)
    assert found.provisioned == "1Gi"
    assert found.used is not None and found.used != "0"  # a thin overlay: a few KiB, not 1Gi
    assert found.capacity is not None and found.available is not None


def test_capabilities_follow_the_files_present(tmp_path: Path) -> None:
    code, vars_ = tmp_path / "code.fd", tmp_path / "vars.fd"
    code.write_bytes(b"")
    vars_.write_bytes(b"")
    ovmf = Ovmf(
        code=str(code),
        vars_template=str(vars_),
        secure_code=str(tmp_path / "missing"),
        secure_vars_template=str(vars_),
    )
    found = probe.capabilities(ovmf, vhost_net=tmp_path / "vhost-net")
    assert (found.uefi, found.secure_boot, found.vhost_net) == (True, False, False)
    assert found.security_driver is None and found.seccomp_sandbox is None
    assert found.cgroup_controllers == []


def test_a_container_host_offers_no_vm_features_whatever_files_it_has(tmp_path: Path) -> None:
    present = tmp_path / "present"
    present.write_bytes(b"")
    ovmf = Ovmf(
        code=str(present),
        vars_template=str(present),
        secure_code=str(present),
        secure_vars_template=str(present),
    )
    conf = tmp_path / "qemu.conf"
    conf.write_text("seccomp_sandbox = 1\n")
    vm_host = probe.capabilities(ovmf, vhost_net=present, qemu_conf=conf)
    lxc_host = probe.capabilities(ovmf, vhost_net=present, qemu_conf=conf, containers=True)
    features = ("uefi", "secure_boot", "vhost_net", "seccomp_sandbox")
    assert [getattr(vm_host, f) for f in features] == [True, True, True, True]
    assert [getattr(lxc_host, f) for f in features] == [False, False, False, False]


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        pytest.param(("apparmor", "dac"), "apparmor", id="apparmor"),
        pytest.param(("selinux", "dac"), "selinux", id="selinux"),
        pytest.param(("none", "dac"), "none", id="security-driver-none"),
        pytest.param(("dac",), "none", id="dac-only-confines-nothing"),
        pytest.param((), None, id="not-reported"),
    ],
)
def test_security_driver_from_secmodels(models: tuple[str, ...], expected: str | None) -> None:
    assert probe.security_driver(models) == expected


def test_capabilities_carry_security_driver_and_cgroup_controllers(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    ovmf = Ovmf(
        code=missing, vars_template=missing, secure_code=missing, secure_vars_template=missing
    )
    found = probe.capabilities(
        ovmf,
        vhost_net=tmp_path,
        security_models=("apparmor", "dac"),
        cgroup_controllers=frozenset({"memory", "cpu"}),
    )
    assert (found.uefi, found.vhost_net, found.security_driver) == (False, True, "apparmor")
    assert found.cgroup_controllers == ["cpu", "memory"]


DEVICES = [
    PciDeviceInfo("0000:af:02.0", "8086", "154c", 1),
    PciDeviceInfo("0000:3b:02.0", "8086", "154c", 0),
    PciDeviceInfo("0000:00:1f.2", "8086", "2922", None),
    PciDeviceInfo("0000:d8:00.0", "10de", "1eb8", None),
]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        pytest.param([], [], id="no-allow-list-offers-nothing"),
        pytest.param(
            [{"vendorId": "8086", "productId": "154c", "alias": "vf"}],
            [("0000:3b:02.0", "vf", 0), ("0000:af:02.0", "vf", 1)],
            id="vendor-and-product",
        ),
        pytest.param(
            [{"vendorId": "8086", "alias": "intel"}],
            [
                ("0000:00:1f.2", "intel", None),
                ("0000:3b:02.0", "intel", 0),
                ("0000:af:02.0", "intel", 1),
            ],
            id="vendor-only",
        ),
        pytest.param(
            [
                {"vendorId": "10de", "productId": "1eb8", "alias": "gpu"},
                {"vendorId": "8086", "productId": "154c", "alias": "vf"},
                {"vendorId": "8086", "alias": "intel"},
            ],
            [
                ("0000:00:1f.2", "intel", None),
                ("0000:3b:02.0", "vf", 0),
                ("0000:af:02.0", "vf", 1),
                ("0000:d8:00.0", "gpu", None),
            ],
            id="first-matching-rule-wins",
        ),
    ],
)
def test_pci_inventory(
    rules: list[dict[str, str]], expected: list[tuple[str, str, int | None]]
) -> None:
    found = probe.pci_inventory([PciPassthroughRule.model_validate(r) for r in rules], DEVICES)
    assert [(d.address, d.alias, d.numa_cell) for d in found] == expected
    assert all((d.vendor_id, d.product_id) != ("", "") for d in found)


def test_pci_rules_are_read_from_a_spec_the_controller_refuses() -> None:
    host = {
        "spec": {
            "cpuDedicatedSet": "0-3",
            "cpuSharedSet": "2-7",  # overlapping: stored before the schema refused it
            "pciPassthrough": [{"vendorId": "8086", "alias": "intel"}],
        }
    }
    assert [(r.vendor_id, r.alias) for r in probe.pci_rules(host)] == [("8086", "intel")]
    assert probe.pci_rules(None) == []


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        pytest.param("", True, id="libvirt-default-on"),
        pytest.param("seccomp_sandbox = 1\n", True, id="on"),
        pytest.param("seccomp_sandbox = 0\n", False, id="off"),
        pytest.param("#seccomp_sandbox = 0\n", True, id="commented-out"),
        pytest.param("seccomp_sandbox = 0\nseccomp_sandbox = 1\n", True, id="last-wins"),
        pytest.param(None, None, id="unreadable"),
    ],
)
def test_seccomp_sandbox_from_qemu_conf(
    tmp_path: Path, conf: str | None, expected: bool | None
) -> None:
    path = tmp_path / "qemu.conf"
    if conf is not None:
        path.write_text(conf)
    assert probe.seccomp_sandbox(path) is expected
    assert probe.seccomp_sandbox(None) is None


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        pytest.param("", None, id="left-to-libvirt"),
        pytest.param('#cgroup_controllers = [ "cpu" ]\n', None, id="commented-out"),
        pytest.param("cgroup_controllers = [ ]\n", frozenset(), id="none"),
        pytest.param(
            'cgroup_controllers = [ "cpu", "memory", "cpuset" ]\n',
            frozenset({"cpu", "memory", "cpuset"}),
            id="listed",
        ),
        pytest.param(
            "cgroup_controllers = [\n  'cpu',  # shares and quotas\n  \"devices\",\n]\n",
            frozenset({"cpu", "devices"}),
            id="over-lines-with-comments",
        ),
        pytest.param(
            'cgroup_controllers = [ "cpu" ]\ncgroup_controllers = [ "memory" ]\n',
            frozenset({"memory"}),
            id="last-wins",
        ),
        pytest.param(None, None, id="unreadable"),
    ],
)
def test_cgroup_controllers_from_qemu_conf(
    tmp_path: Path, conf: str | None, expected: frozenset[str] | None
) -> None:
    path = tmp_path / "qemu.conf"
    if conf is not None:
        path.write_text(conf)
    assert probe.cgroup_controllers(path) == expected
    assert probe.cgroup_controllers(None) is None
