"""Tuning and hardening knobs reach a real libvirtd: a VM rendered by core.domain with a
representative combination boots on a local host (TCG), and its live XML shows each setting.

The combination: a qcow2 overlay disk with cache none + io native, a virtio NIC with
multiqueue on a tap device (a bridge made for the test: libvirt refuses multiqueue on
user-mode networking, which the API's CEL rule mirrors), a memory balloon with a stats
period, UEFI on Debian's OVMF (plain and Secure Boot), and CPU shares/quota, which the
testbed hosts cannot enforce (their qemu.conf gives libvirt no cgroup controllers): the
renderer leaves them out and reports them, and libvirt's own refusal is checked too.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import eventually, require
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.domain import converter
from kubevisor.core.domain.host import HostEnvironment, Ovmf
from kubevisor.drivers import base
from kubevisor.drivers.libvirt import LibvirtHypervisor
from kubevisor.testbed import guest as guest_image
from kubevisor.testbed.guest import Guest
from kubevisor.testbed.hosts import LocalHost

pytestmark = pytest.mark.libvirtd

BOOT_TIMEOUT = 120.0  # OVMF under TCG on a loaded CI machine; about 5 s when idle
OVMF = Ovmf()
# The testbed's qemu.conf sets cgroup_controllers = [] (see kubevisor.testbed.hosts).
TESTBED_CGROUPS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Booted:
    """A started domain: its live XML and the serial log it writes."""

    live: ET.Element
    serial_log: Path


@pytest.fixture(scope="module")
def bridge() -> Iterator[str]:
    """A Linux bridge for tap-backed NICs; libvirt creates and attaches the taps."""
    require(
        os.geteuid() == 0 and shutil.which("ip") is not None,
        what="a Linux bridge for the multiqueue NIC (root and iproute2)",
        how="run as root with iproute2 installed",
    )
    name = f"kvknobs{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


@pytest.fixture(scope="module")
def ovmf() -> Ovmf:
    files = (OVMF.code, OVMF.vars_template, OVMF.secure_code, OVMF.secure_vars_template)
    require(
        all(Path(path).is_file() for path in files),
        what=f"OVMF firmware ({', '.join(files)})",
        how="apt-get install ovmf (or run hack/setup.sh)",
    )
    return OVMF


def overlay(directory: Path, name: str) -> Path:
    """A thin qcow2 overlay on a qcow2 base, as the agent makes for an image-backed disk."""
    base_image = directory / f"{name}-base.qcow2"
    disk = directory / f"{name}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base_image), "64M"], check=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base_image), "-F", "qcow2",
         str(disk)],
        check=True,
    )  # fmt: skip
    return disk


def tuned_vm(name: str, *, guest: Guest, bridge: str, firmware: dict[str, Any]) -> VirtualMachine:
    return VirtualMachine.model_validate(
        {
            "metadata": {
                "namespace": "knobs",
                "name": name,
                "uid": str(uuidlib.uuid4()),
                "generation": 1,
            },
            "spec": {
                "cpu": {
                    "vcpus": 2,
                    "tune": {
                        "shares": 512,
                        "periodMicroseconds": 100000,
                        "quotaMicroseconds": 50000,
                    },
                },
                # OVMF with direct kernel boot needs more than 128Mi: with 128Mi the
                # firmware dies with #UD before the kernel's EFI stub runs.
                "memory": {"size": "256Mi", "balloon": {"statsPeriodSeconds": 5}},
                "disks": [{"name": "data", "image": "base.qcow2", "io": "native"}],
                "networks": [
                    {"name": "fast", "type": "bridge", "source": bridge, "multiqueue": True}
                ],
                "firmware": firmware,
                # The disk only has to attach; the guest boots its kernel directly.
                "boot": {
                    "kernel": str(guest.kernel),
                    "initrd": str(guest.initrd),
                    "cmdline": guest.cmdline,
                },
            },
        }
    )


def host_environment(
    directory: Path,
    *,
    ovmf: Ovmf,
    cgroup_controllers: frozenset[str] | None = TESTBED_CGROUPS,
) -> HostEnvironment:
    return HostEnvironment(
        domain_type="qemu",
        disk_paths={"data": str(overlay(directory, "data"))},
        serial_log=str(directory / "serial.log"),
        ovmf=ovmf,
        nvram=str(directory / "VARS.fd"),
        vhost_net=True if Path("/dev/vhost-net").exists() else None,
        cgroup_controllers=cgroup_controllers,
    )


def boot(host: LocalHost, xml: str, uuid: str, serial_log: Path) -> Booted:
    """Define and start `xml`, wait for the guest's marker, return the live XML; undefine."""

    async def define_and_start() -> str:
        async with LibvirtHypervisor(host.uri) as hypervisor:
            await hypervisor.define(xml)
            await hypervisor.start(uuid)
            return await hypervisor.domain_xml(uuid)

    async def remove() -> None:
        async with LibvirtHypervisor(host.uri) as hypervisor:
            await hypervisor.undefine(uuid)

    try:
        live = ET.fromstring(asyncio.run(define_and_start()))
        eventually(
            lambda: (
                serial_log.exists() and guest_image.MARKER in serial_log.read_text(errors="replace")
            ),
            timeout=BOOT_TIMEOUT,
            what=f"{guest_image.MARKER} on the serial console ({serial_log})",
        )
        return Booted(live=live, serial_log=serial_log)
    finally:
        asyncio.run(remove())


def disk_driver(live: ET.Element) -> dict[str, str]:
    found = live.find("devices/disk[@device='disk']/driver")
    assert found is not None, ET.tostring(live, encoding="unicode")
    return dict(found.attrib)


@pytest.mark.parametrize(
    ("firmware", "machine", "code", "template", "secure"),
    [
        pytest.param({"type": "uefi"}, "pc-i440fx", OVMF.code, OVMF.vars_template, None, id="uefi"),
        pytest.param(
            {"type": "uefi", "secureBoot": True},
            "pc-q35",
            OVMF.secure_code,
            OVMF.secure_vars_template,
            "yes",
            id="uefi-secure-boot",
        ),
    ],
)
def test_tuned_guest_boots_and_libvirt_applies_every_knob(
    local_hosts: list[LocalHost],
    tiny_guest: Guest,
    ovmf: Ovmf,
    bridge: str,
    tmp_path: Path,
    firmware: dict[str, Any],
    machine: str,
    code: str,
    template: str,
    secure: str | None,
) -> None:
    vm = tuned_vm("tuned", guest=tiny_guest, bridge=bridge, firmware=firmware)
    host = host_environment(tmp_path, ovmf=ovmf)
    xml = converter.render(vm, host=host)
    # Limits the testbed cannot enforce are left out of the XML and reported instead.
    assert converter.unenforced_limits(vm, host) == [
        "cpu.tune: the host has no cgroup cpu controller; shares and quota not enforced"
    ]
    booted = boot(local_hosts[0], xml, str(vm.metadata["uid"]), tmp_path / "serial.log")
    live = booted.live

    # Disk: O_DIRECT and Linux AIO on the thin overlay, backed by its base image.
    assert disk_driver(live) == {"name": "qemu", "type": "qcow2", "cache": "none", "io": "native"}
    source = live.find("devices/disk[@device='disk']/source")
    assert source is not None and source.get("file") == host.disk_paths["data"]
    backing = live.find("devices/disk[@device='disk']/backingStore/source")
    assert backing is not None and backing.get("file") == str(tmp_path / "data-base.qcow2")

    # NIC: virtio on a tap in the bridge, one queue per vCPU (vhost where the host has it).
    nic = live.find("devices/interface[@type='bridge']")
    assert nic is not None
    model = nic.find("model")
    assert model is not None and model.get("type") == "virtio"
    driver = nic.find("driver")
    assert driver is not None and driver.get("queues") == "2"
    assert driver.get("name") == ("vhost" if host.vhost_net else None)
    target = nic.find("target")
    assert target is not None and target.get("dev"), "libvirt created no tap device"

    # Balloon: virtio with the stats period.
    balloon = live.find("devices/memballoon")
    assert balloon is not None and balloon.get("model") == "virtio"
    stats = balloon.find("stats")
    assert stats is not None and stats.get("period") == "5"

    # Firmware: OVMF code read-only, the VM's own variable store from the template.
    machine_type = live.find("os/type")
    assert machine_type is not None and (machine_type.get("machine") or "").startswith(machine)
    loader = live.find("os/loader")
    assert loader is not None and (loader.text, loader.get("type")) == (code, "pflash")
    assert (loader.get("readonly"), loader.get("secure")) == ("yes", secure)
    nvram = live.find("os/nvram")
    assert nvram is not None and (nvram.text, nvram.get("template")) == (host.nvram, template)
    assert not Path(str(host.nvram)).exists(), "undefining left the variable store behind"
    smm = live.find("features/smm")
    assert (smm.get("state") if smm is not None else None) == ("on" if secure else None)

    # CPU limits: not in the live domain, as unenforced_limits reported.
    assert live.find("cputune/shares") is None


def test_libvirt_refuses_cpu_limits_without_the_cgroup_cpu_controller(
    local_hosts: list[LocalHost], tiny_guest: Guest, ovmf: Ovmf, bridge: str, tmp_path: Path
) -> None:
    """What happens when render is told nothing about cgroups on such a host: the start
    fails, which is why the agent must pass the host's controllers."""
    vm = tuned_vm("limits", guest=tiny_guest, bridge=bridge, firmware={"type": "bios"})
    host = host_environment(tmp_path, ovmf=ovmf, cgroup_controllers=None)
    xml = converter.render(vm, host=host)
    assert ET.fromstring(xml).findtext("cputune/shares") == "512"
    uuid = str(vm.metadata["uid"])

    async def main() -> str:
        async with LibvirtHypervisor(local_hosts[0].uri) as hypervisor:
            await hypervisor.define(xml)
            try:
                with pytest.raises(base.HypervisorError) as refused:
                    await hypervisor.start(uuid)
                return str(refused.value)
            finally:
                await hypervisor.undefine(uuid)

    assert "cgroup cpu is required for scheduler tuning" in asyncio.run(main())


def test_libvirt_refuses_multiqueue_on_user_networking(
    local_hosts: list[LocalHost], tiny_guest: Guest, ovmf: Ovmf, bridge: str, tmp_path: Path
) -> None:
    """Why the API refuses multiqueue with type user (rule multiqueue-needs-a-tap-device):
    the same NIC as type user, hand-edited past the API, does not start."""
    vm = tuned_vm("user-mq", guest=tiny_guest, bridge=bridge, firmware={"type": "bios"})
    host = host_environment(tmp_path, ovmf=ovmf)
    root = ET.fromstring(converter.render(vm, host=host))
    nic = root.find("devices/interface")
    assert nic is not None
    source = nic.find("source")
    assert source is not None
    nic.set("type", "user")
    nic.remove(source)
    uuid = str(vm.metadata["uid"])

    async def main() -> str:
        async with LibvirtHypervisor(local_hosts[0].uri) as hypervisor:
            await hypervisor.define(ET.tostring(root, encoding="unicode"))
            try:
                with pytest.raises(base.HypervisorError) as refused:
                    await hypervisor.start(uuid)
                return str(refused.value)
            finally:
                await hypervisor.undefine(uuid)

    assert "multiqueue is not supported for network interfaces of type user" in asyncio.run(main())
