"""The libvirt driver against a real libvirtd running LXC: a VirtualMachine's spec.container,
rendered by core.domain, runs as a system container on the host's kernel.

One local host (kubevisor.testbed.hosts, lxc=True) for the module; the container is the
testbed's busybox root filesystem (kubevisor.testbed.container).
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.domains import events_until, expect_state
from harness import require, until
from kubevisor.api.virtualmachine import VirtualMachine
from kubevisor.core.domain import converter, identity
from kubevisor.core.domain.host import HostEnvironment
from kubevisor.drivers import base
from kubevisor.drivers.libvirt import LibvirtHypervisor
from kubevisor.testbed import container, guest, hosts

pytestmark = pytest.mark.libvirtd
S = base.DomainState
E = base.EventKind
MEMORY_KIB = 48 * 1024


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[hosts.LocalHost]:
    missing = hosts.missing_prerequisites() + hosts.missing_lxc_prerequisites()
    require(
        not missing,
        what=f"a local libvirtd host with the LXC driver (missing {missing})",
        how=f"{hosts.HOW_TO_INSTALL}; {hosts.LXC_HOW_TO_INSTALL}",
    )
    require(guest.BUSYBOX.is_file(), what="a static busybox", how=guest.HOW_TO_INSTALL)
    state_dir = tmp_path_factory.mktemp("lxc-hosts")
    [started] = hosts.start_hosts(1, state_dir=state_dir, lxc=True)
    yield started
    hosts.stop_hosts(state_dir)


def container_vm(rootfs: Path) -> VirtualMachine:
    uid = str(uuidlib.uuid4())
    return VirtualMachine.model_validate(
        {
            "metadata": {"namespace": "lxc", "name": f"c-{uid[:8]}", "uid": uid, "generation": 1},
            "spec": {
                "memory": {"size": f"{MEMORY_KIB}Ki"},
                "cpu": {"tune": {"shares": 256}},
                "container": {"rootfs": str(rootfs), "init": container.HEARTBEAT_INIT},
            },
        }
    )


async def beating(rootfs: Path) -> None:
    """Wait until the container's init counts on from where it is now: it runs."""
    seen = container.beats(rootfs)
    await until(lambda: container.beats(rootfs) > seen, what="the container's init counting")


def test_container_starts_pauses_resumes_and_shuts_down(
    host: hosts.LocalHost, rootfs_dir: Path
) -> None:
    rootfs = container.build_rootfs(rootfs_dir / "cycle")
    vm = container_vm(rootfs)
    uuid = str(vm.metadata["uid"])
    xml = converter.render(vm, host=HostEnvironment(domain_type="lxc"))

    async def main() -> None:
        async with LibvirtHypervisor(host.lxc_uri) as hypervisor:
            events = hypervisor.events()
            await hypervisor.define(xml)
            await events_until(events, uuid, E.DEFINED, "added")
            # The agent finds its containers again by the metadata, as it does its VMs.
            assert identity.read_metadata(await hypervisor.domain_xml(uuid)) == identity.vm_ref(vm)
            try:
                await hypervisor.start(uuid)
                await events_until(events, uuid, E.STARTED, "booted")
                await expect_state(hypervisor, uuid, S.RUNNING, "booted")
                await beating(rootfs)
                # The memory cgroup's limit, as the container itself sees it.
                assert container.memory_kib(rootfs) == MEMORY_KIB
                # No spec.networks: a network namespace of its own, with no host NIC in it.
                assert container.interfaces(rootfs) == ["lo"]
                # A user namespace: the container's root is the host's uid 100000.
                assert container.uid_map(rootfs) == [(0, 100000, 65536)]

                await hypervisor.suspend(uuid)
                await events_until(events, uuid, E.SUSPENDED, "paused")
                await expect_state(hypervisor, uuid, S.PAUSED, "user")
                frozen = container.beats(rootfs)
                await hypervisor.resume(uuid)
                await events_until(events, uuid, E.RESUMED, "unpaused")
                await beating(rootfs)
                assert container.beats(rootfs) > frozen

                outcome = await hypervisor.shutdown(uuid, timeout=30)
                # Both, to tell "init never got SIGTERM" from "libvirt missed its exit".
                assert (outcome, container.stopped(rootfs)) == (
                    base.ShutdownOutcome.GRACEFUL,
                    True,
                )
                await events_until(events, uuid, E.STOPPED, "shutdown")
                await expect_state(hypervisor, uuid, S.SHUTOFF, "shutdown")
            finally:
                await hypervisor.undefine(uuid)
            await events_until(events, uuid, E.UNDEFINED, "removed")
            assert uuid not in {d.uuid for d in await hypervisor.list_domains()}

    asyncio.run(main())


def test_host_facts_of_the_lxc_driver(host: hosts.LocalHost) -> None:
    async def main() -> base.HostFacts:
        async with LibvirtHypervisor(host.lxc_uri) as hypervisor:
            return await hypervisor.host_facts()

    facts = asyncio.run(main())
    assert (facts.hostname, facts.uuid) == (host.hostname, host.uuid)
    assert (facts.hypervisor_type, facts.domain_types) == ("LXC", ("lxc",))
    assert facts.memory_kib > MEMORY_KIB


def container_processes(uid: str) -> list[int]:
    """Processes of the container `uid`: libvirt puts LIBVIRT_LXC_UUID in its init's
    environment, and the init's children inherit it. They live in a PID namespace nested
    in the host's, so `hosts.namespace_processes` does not list them."""
    marker = f"LIBVIRT_LXC_UUID={uid}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_stopping_the_host_ends_its_containers_and_their_cgroups(
    tmp_path: Path, rootfs_dir: Path
) -> None:
    state_dir = tmp_path / "hosts"
    [doomed] = hosts.start_hosts(1, state_dir=state_dir, lxc=True)
    rootfs = container.build_rootfs(rootfs_dir / "host-stops")
    vm = container_vm(rootfs)
    xml = converter.render(vm, host=HostEnvironment(domain_type="lxc"))
    # libvirt names the cgroup after the domain, leaving out characters like '_'.
    cgroup_name = identity.domain_name("lxc", str(vm.metadata["name"])).replace("_", "")

    def cgroups() -> list[Path]:
        return [p for p in Path("/").glob(hosts.CONTAINER_CGROUPS[1:]) if cgroup_name in p.name]

    async def start() -> None:
        async with LibvirtHypervisor(doomed.lxc_uri) as hypervisor:
            await hypervisor.define(xml)
            await hypervisor.start(str(vm.metadata["uid"]))
            await beating(rootfs)

    asyncio.run(start())
    assert cgroups(), "the running container has its cgroups"
    assert container_processes(str(vm.metadata["uid"])), "and its processes"
    namespace = hosts.host_pid_namespace(doomed)
    hosts.stop_hosts(state_dir)
    assert namespace is not None and hosts.namespace_processes(namespace) == []
    assert cgroups() == []
    assert container_processes(str(vm.metadata["uid"])) == []
