"""The backup job's XML: the copied disks by their domain target, the others left out."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from kubevisor.drivers import base
from kubevisor.drivers.libvirt.snapshot import backup_xml
from kubevisor.drivers.snapshots import DiskCopy

DOMAIN = """<domain type='qemu'><devices>
  <disk type='file' device='disk'><source file='/vms/u/disk-root.qcow2'/><target dev='vda'/></disk>
  <disk type='file' device='disk'><source file='/vms/u/disk-data.qcow2'/><target dev='vdb'/></disk>
  <disk type='file' device='cdrom'><source file='/vms/u/seed.iso'/><target dev='sda'/></disk>
</devices></domain>"""


def disks(xml: str) -> dict[str, tuple[str | None, str | None]]:
    root = ET.fromstring(xml)
    assert (root.tag, root.get("mode")) == ("domainbackup", "push")
    found = {}
    for disk in root.iterfind("./disks/disk"):
        target = disk.find("target")
        found[str(disk.get("name"))] = (
            disk.get("backup"),
            target.get("file") if target is not None else None,
        )
    return found


def test_only_the_asked_disks_are_copied_to_their_targets() -> None:
    xml = backup_xml(DOMAIN, [DiskCopy("/vms/u/disk-data.qcow2", "/cache/.snap-data.partial")])
    assert disks(xml) == {
        "vda": ("no", None),
        "vdb": ("yes", "/cache/.snap-data.partial"),
        "sda": ("no", None),
    }


def test_a_target_path_is_an_attribute_never_markup() -> None:
    target = "/cache/<x>&'\".partial"
    xml = backup_xml(DOMAIN, [DiskCopy("/vms/u/disk-root.qcow2", target)])
    assert disks(xml)["vda"] == ("yes", target)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("/vms/other/disk-root.qcow2", id="another-vms-disk"),
        pytest.param("/vms/u/disk-root", id="a-prefix-of-a-disk"),
    ],
)
def test_a_source_the_domain_does_not_use_is_refused(source: str) -> None:
    with pytest.raises(base.PermanentError, match=f"no disk of the domain uses {source}"):
        backup_xml(DOMAIN, [DiskCopy(source, "/cache/x.partial")])
