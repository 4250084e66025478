"""Local hypervisor hosts: two libvirtd instances that look like two machines."""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from guestlog import wait_for_counter
from harness import require
from kubevisor.testbed import guest as guest_image
from kubevisor.testbed import hosts

pytestmark = pytest.mark.libvirtd


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    missing = hosts.missing_prerequisites()
    require(not missing, what=f"local libvirtd hosts (missing {missing})", how=hosts.HOW_TO_INSTALL)
    path = tmp_path_factory.mktemp("hosts")
    yield path
    hosts.stop_hosts(path)


@pytest.fixture(scope="module")
def two_hosts(state_dir: Path) -> list[hosts.LocalHost]:
    return hosts.start_hosts(2, state_dir=state_dir)


def capabilities_uuid(uri: str) -> str | None:
    conn = libvirt.open(uri)
    try:
        return ET.fromstring(conn.getCapabilities()).findtext("host/uuid")
    finally:
        conn.close()


def test_hosts_are_distinct_machines(two_hosts: list[hosts.LocalHost]) -> None:
    first, second = two_hosts
    assert len({first.uuid, second.uuid}) == 2
    assert len({first.hostname, second.hostname}) == 2
    assert len({first.uri, second.uri}) == 2
    first_block = range(first.migration_ports[0], first.migration_ports[1] + 1)
    assert second.migration_ports[0] not in first_block
    assert second.migration_ports[1] not in first_block
    for host in two_hosts:
        conn = libvirt.open(host.uri)
        try:
            assert conn.getHostname() == host.hostname
            assert conn.getType() == "QEMU"
        finally:
            conn.close()
        assert capabilities_uuid(host.uri) == host.uuid


def test_starting_again_reuses_running_hosts(
    state_dir: Path, two_hosts: list[hosts.LocalHost]
) -> None:
    again = hosts.start_hosts(2, state_dir=state_dir)
    assert [(h.name, h.pid, h.uuid) for h in again] == [(h.name, h.pid, h.uuid) for h in two_hosts]
    assert [h.name for h in hosts.list_hosts(state_dir) if h.pid] == [h.name for h in two_hosts]


def test_guest_live_migrates_between_hosts(
    two_hosts: list[hosts.LocalHost], tmp_path: Path
) -> None:
    require(
        bool(guest_image.installed_kernels()) and guest_image.BUSYBOX.is_file(),
        what="the guest kernel and busybox",
        how=guest_image.HOW_TO_INSTALL,
    )
    source, target = two_hosts
    guest = guest_image.build_guest(tmp_path / "guest")
    serial = tmp_path / "serial.log"
    uuid = str(uuidlib.uuid4())
    src = libvirt.open(source.uri)
    dst = libvirt.open(target.uri)
    try:
        domain = src.createXML(guest.domain_xml(name="migrant", uuid=uuid, serial_log=serial))
        before = wait_for_counter(serial, above=0)
        # migration_host is unset on purpose: the migration URI names 127.0.0.1 instead.
        params = {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"}
        domain.migrateToURI3(
            target.uri, params, libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
        )
        migrated = dst.lookupByUUIDString(uuid)
        assert migrated.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert uuid not in {d.UUIDString() for d in src.listAllDomains()}
        wait_for_counter(serial, above=wait_for_counter(serial, above=before))
        migrated.destroy()
    finally:
        src.close()
        dst.close()


def test_stopping_leaves_no_process_behind(
    state_dir: Path, two_hosts: list[hosts.LocalHost]
) -> None:
    running = hosts.list_hosts(state_dir)
    namespaces = [hosts.host_pid_namespace(host) for host in running]
    assert all(namespaces)
    stopped = hosts.stop_hosts(state_dir)
    assert [h.name for h in stopped] == [h.name for h in two_hosts]
    for namespace in namespaces:
        assert namespace is not None
        assert hosts.namespace_processes(namespace) == []
    assert all(host.pid is None for host in hosts.list_hosts(state_dir))
    assert hosts.stop_hosts(state_dir) == []
