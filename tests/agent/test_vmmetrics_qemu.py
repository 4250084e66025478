"""The agent's per-VM metrics from a real libvirtd running the tiny guest under QEMU (TCG):
the disk counters move when the guest writes to its disk, the CPU time when it runs."""

from __future__ import annotations

import asyncio
import subprocess
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agent.scrapes import Labels, Samples, labels, scrape
from harness import require, until
from kubevisor.agent import vmmetrics
from kubevisor.core.domain import identity
from kubevisor.drivers.libvirt import LibvirtHypervisor
from kubevisor.testbed import guest as guest_image
from kubevisor.testbed import hosts
from kubevisor.testbed.guestshell import GuestShell

pytestmark = pytest.mark.libvirtd
BOOT_TIMEOUT = 120.0  # TCG on a loaded 2-core CI machine
MIB = 2**20


def with_metadata(xml: str, ref: identity.VmRef) -> str:
    """`xml` with the kubevisor metadata the agent's own rendering writes."""
    root = ET.fromstring(xml)
    metadata = ET.SubElement(root, "metadata")
    ET.SubElement(
        metadata,
        f"{{{identity.NAMESPACE}}}vm",
        namespace=ref.namespace,
        name=ref.name,
        uid=ref.uid,
        generation=str(ref.generation),
    )
    return ET.tostring(root, encoding="unicode")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[hosts.LocalHost]:
    """A libvirtd of this module's own: the shared stack's agents would fence a domain
    with kubevisor metadata and no VirtualMachine."""
    missing = hosts.missing_prerequisites()
    require(
        not missing, what=f"a local libvirtd host (missing {missing})", how=hosts.HOW_TO_INSTALL
    )
    state_dir = tmp_path_factory.mktemp("hosts")
    try:
        yield hosts.start_hosts(1, state_dir=state_dir)[0]
    finally:
        hosts.stop_hosts(state_dir)


def test_disk_and_cpu_counters_move_when_the_guest_works(
    host: hosts.LocalHost, tiny_guest: guest_image.Guest, tmp_path: Path
) -> None:
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    uid = str(uuidlib.uuid4())
    serial = tmp_path / "serial.log"
    ref = identity.VmRef(namespace="metrics", name="metered", uid=uid, generation=1)
    xml = tiny_guest.domain_xml(
        name=identity.domain_name(ref.namespace, ref.name),
        uuid=uid,
        serial_log=serial,
        disk=disk,
        console=True,
    )
    vm = labels(namespace="metrics", name="metered", host="node-a")
    vda = labels(namespace="metrics", name="metered", host="node-a", device="vda")

    async def main() -> tuple[Samples, Samples, int]:
        async with LibvirtHypervisor(host.uri) as hypervisor:
            await hypervisor.define(with_metadata(xml, ref))
            try:
                await hypervisor.start(uid)
                await until(
                    lambda: guest_image.MARKER in serial.read_text(errors="replace"),
                    timeout=BOOT_TIMEOUT,
                    what="the guest to boot",
                )
                registry = CollectorRegistry()
                registry.register(
                    vmmetrics.VmUsageCollector(
                        hypervisor, host="node-a", loop=asyncio.get_running_loop(), max_age=0
                    )
                )
                before = await asyncio.to_thread(scrape, registry)
                # 1 MiB past the guest's token, straight to the disk.
                write = "dd if=/dev/urandom of=/dev/vda bs=4096 seek=256 count=256 conv=fsync"
                result = await asyncio.to_thread(GuestShell(host.uri, uid).run, write)
                after = await asyncio.to_thread(scrape, registry)
                return before, after, result.exit_code
            finally:
                await hypervisor.undefine(uid)

    before, after, code = asyncio.run(main())
    assert code == 0

    def grew(name: str, series: Labels) -> float:
        return after[(name, series)] - before[(name, series)]

    assert grew("kubevisor_vm_disk_write_bytes_total", vda) >= MIB
    assert grew("kubevisor_vm_disk_write_requests_total", vda) >= 1
    assert grew("kubevisor_vm_disk_write_seconds_total", vda) > 0
    assert after[("kubevisor_vm_disk_read_bytes_total", vda)] > 0  # the guest reads its token
    assert grew("kubevisor_vm_cpu_seconds_total", vm) > 0
    assert after[("kubevisor_vm_vcpus", vm)] == 1
    assert grew("kubevisor_vm_vcpu_seconds_total", (*vm, ("vcpu", "0"))) > 0
    assert after[("kubevisor_vm_memory_actual_bytes", vm)] == 96 * MIB
