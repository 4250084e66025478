"""PCI node devices and security models through the libvirt driver (libvirt's test driver
with a node fixture: our machines have no passthrough devices) and the fake."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kubevisor.drivers import base
from kubevisor.drivers.fake import FakeHypervisor
from kubevisor.drivers.libvirt import LibvirtHypervisor, facts

NODE = Path(__file__).parent / "fixtures" / "pci-node.xml"


def test_pci_devices_from_test_driver_node() -> None:
    async def main() -> list[base.PciDeviceInfo]:
        async with LibvirtHypervisor(f"test://{NODE}") as hypervisor:
            return await hypervisor.pci_devices()

    assert asyncio.run(main()) == [
        base.PciDeviceInfo("0000:00:1f.2", "8086", "2922", None),
        base.PciDeviceInfo("0000:3b:02.0", "8086", "154c", 0),
        base.PciDeviceInfo("0000:3b:02.1", "8086", "154c", 0),
        base.PciDeviceInfo("0000:af:02.0", "8086", "154c", 1),
        base.PciDeviceInfo("0000:d8:00.0", "10de", "1eb8", None),
    ]


def test_default_test_driver_has_no_pci_devices() -> None:
    async def main() -> list[base.PciDeviceInfo]:
        async with LibvirtHypervisor("test:///default") as hypervisor:
            return await hypervisor.pci_devices()

    assert asyncio.run(main()) == []


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        pytest.param(
            "<device><name>pci_0001_3b_1f_7</name><capability type='pci'><domain>1</domain>"
            "<bus>59</bus><slot>31</slot><function>7</function><product id='0x154C'/>"
            "<vendor id='0x8086'/><numa node='-1'/></capability></device>",
            base.PciDeviceInfo("0001:3b:1f.7", "8086", "154c", None),
            id="hex-address-lower-case-ids-no-numa",
        ),
        pytest.param(
            "<device><name>net_eth0</name><capability type='net'><interface>eth0</interface>"
            "</capability></device>",
            None,
            id="not-a-pci-device",
        ),
    ],
)
def test_pci_device_from_xml(xml: str, expected: base.PciDeviceInfo | None) -> None:
    assert facts.pci_device_from(xml) == expected


def test_security_models_from_capabilities() -> None:
    async def main() -> base.HostFacts:
        async with LibvirtHypervisor("test:///default") as hypervisor:
            return await hypervisor.host_facts()

    assert asyncio.run(main()).security_models == ("testSecurity",)


def test_fake_reports_the_devices_a_test_gives_it() -> None:
    async def main() -> list[base.PciDeviceInfo]:
        fake = FakeHypervisor()
        await fake.connect()
        fake.pci = [
            base.PciDeviceInfo("0000:af:02.0", "8086", "154c", 1),
            base.PciDeviceInfo("0000:3b:02.0", "8086", "154c", 0),
        ]
        return await fake.pci_devices()

    assert [d.address for d in asyncio.run(main())] == ["0000:3b:02.0", "0000:af:02.0"]
