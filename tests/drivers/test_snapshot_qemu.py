"""Copies of a running guest's disk by the libvirt driver's backup job, against a real
libvirtd running QEMU (TCG): the copy holds what the guest wrote, is self-contained, and
the guest runs on; a failed request leaves no file.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import guestlog
from drivers.test_libvirt_qemu import BOOT_TIMEOUT, disk_bytes
from harness import require
from kubevisor.drivers import base
from kubevisor.drivers.libvirt import LibvirtHypervisor
from kubevisor.drivers.snapshots import DiskCopy
from kubevisor.testbed import guest as guest_image
from kubevisor.testbed import hosts

pytestmark = pytest.mark.libvirtd
TOKEN = rf"^{guest_image.DISK_TOKEN_PREFIX}([0-9a-f-]{{36}})\s*$"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[hosts.LocalHost]:
    missing = hosts.missing_prerequisites()
    require(
        not missing, what=f"a local libvirtd host (missing {missing})", how=hosts.HOW_TO_INSTALL
    )
    state_dir = tmp_path_factory.mktemp("hosts")
    [started] = hosts.start_hosts(1, state_dir=state_dir)
    yield started
    hosts.stop_hosts(state_dir)


def qemu_img_info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info: dict[str, object] = json.loads(out)
    return info


def test_a_running_guest_disk_is_copied_whole_while_it_runs(
    host: hosts.LocalHost, tiny_guest: guest_image.Guest, tmp_path: Path
) -> None:
    # An overlay on a base, as the agent makes them: the copy must fold the chain in.
    base_image = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base_image), "16M"], check=True)
    disk = tmp_path / "disk.qcow2"
    overlay = ["-b", str(base_image), "-F", "qcow2", str(disk)]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *overlay], check=True)
    uuid = str(uuidlib.uuid4())
    serial = tmp_path / "serial.log"
    xml = tiny_guest.domain_xml(name=f"snap-{uuid[:8]}", uuid=uuid, serial_log=serial, disk=disk)
    copy = tmp_path / ".copy.partial"
    stray = tmp_path / ".stray.partial"

    async def main() -> tuple[str, float]:
        async with LibvirtHypervisor(host.uri) as hypervisor:
            await hypervisor.define(xml)
            try:
                await hypervisor.start(uuid)
                token = (await guestlog.line(serial, TOKEN, timeout=BOOT_TIMEOUT)).group(1)
                before = await guestlog.counter_above(serial, 0)
                outcome = await hypervisor.copy_running_disks(
                    uuid, [DiskCopy(str(disk), str(copy))], quiesce=True, timeout=60
                )
                # The guest ran on through the copy and runs still.
                await guestlog.counter_above(serial, before)
                assert (await hypervisor.state(uuid)).state is base.DomainState.RUNNING
                assert not outcome.frozen  # the tiny guest runs no qemu-guest-agent
                with pytest.raises(base.PermanentError, match="no disk of the domain uses"):
                    await hypervisor.copy_running_disks(
                        uuid, [DiskCopy("/nowhere.qcow2", str(stray))], quiesce=False, timeout=60
                    )
                return token, outcome.cut_seconds
            finally:
                await hypervisor.destroy(uuid)
                await hypervisor.undefine(uuid)

    token, cut = asyncio.run(main())
    info = qemu_img_info(copy)
    assert info["format"] == "qcow2"
    assert "backing-filename" not in info  # self-contained
    assert info["virtual-size"] == 16 << 20
    on_copy = disk_bytes(copy, guest_image.TOKEN_OFFSET, 64)
    assert on_copy.rstrip(b"\0") == f"kubevisor-token {token}\n".encode()
    assert not stray.exists()
    assert 0 < cut < 10
    # The domain's chain is untouched: its disk is still the overlay on the base.
    assert qemu_img_info(disk)["backing-filename"] == str(base_image)
