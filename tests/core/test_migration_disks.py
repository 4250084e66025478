"""Which disks a live migration copies: local ones always, shared ones never."""

from __future__ import annotations

from kubevisor.core.migration import disks_to_copy

SOURCE = """<domain><devices>
  <disk type='file' device='disk'><source file='/srv/nfs/vms/u/disk-root.qcow2'/>
    <target dev='vda'/></disk>
  <disk type='file' device='disk'><source file='/var/lib/kubevisor/vms/u/disk-data.qcow2'/>
    <target dev='vdb'/></disk>
  <disk type='file' device='cdrom'><source file='/var/lib/kubevisor/vms/u/seed.iso'/>
    <target dev='sda'/><readonly/></disk>
</devices></domain>"""


def test_local_disks_are_copied_and_read_only_devices_never() -> None:
    assert disks_to_copy(SOURCE, SOURCE, None) == ["vda", "vdb"]


def test_a_disk_on_the_shared_storage_at_the_same_path_on_the_target_is_not_copied() -> None:
    # The target host's agent state dir happens to be the same path: still copied.
    assert disks_to_copy(SOURCE, SOURCE, "/srv/nfs") == ["vdb"]


def test_a_shared_disk_the_target_puts_elsewhere_is_copied() -> None:
    target = SOURCE.replace("/srv/nfs/vms/u/disk-root.qcow2", "/var/lib/kubevisor/vms/u/r.qcow2")
    assert disks_to_copy(SOURCE, target, "/srv/nfs") == ["vda", "vdb"]


def test_a_path_that_only_starts_with_the_shared_path_is_not_shared() -> None:
    source = SOURCE.replace("/srv/nfs/vms", "/srv/nfs2/vms")
    assert disks_to_copy(source, source, "/srv/nfs") == ["vda", "vdb"]
