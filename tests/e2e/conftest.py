"""The whole stack for end-to-end tests: a real control plane, the controller, and one
agent per real libvirtd host (two hosts), each a separate process like in production."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import ManagedProcess, eventually, require
from kubevisor.core.domain.host import Ovmf
from kubevisor.testbed import container, hosts, netns
from kubevisor.testbed.commands import LOCAL_MIGRATE_URI, LOOPBACK, AgentOptions, ControllerOptions
from kubevisor.testbed.controlplane import ControlPlane, free_ports
from kubevisor.testbed.guest import Guest
from kubevisor.testbed.hosts import LocalHost
from netstack import NetStack
from stacks import ExtraHost, Stack, host_ready


def agent_options(
    plane: ControlPlane, host: LocalHost, guest: Guest, state: Path, metrics_port: int
) -> AgentOptions:
    """The shared stack's agent on `host` (ExtraHost runs variants of it)."""
    return AgentOptions(
        host.name,
        host.uri,
        plane.kubeconfig,
        state,
        domain_type="qemu",
        guest=guest,
        shutdown_grace=15,
        lease_duration=8,
        # Within the controller's grace of 20 s: its failover waits for no longer.
        self_fence_after=16,
        metrics_port=metrics_port,
        # The hosts leave migration_host unset: QEMU streams go to 127.0.0.1.
        migrate_uri=LOCAL_MIGRATE_URI,
        # The testbed's libvirt runs without cgroups (qemu.conf cgroup_controllers = []).
        cgroup_controllers="",
        qemu_conf=host.root / "etc" / "qemu.conf",
        # The tests serve images on 127.0.0.1, which an agent refuses by default.
        image_source_allow=LOOPBACK,
    )


def agent_process(
    plane: ControlPlane, host: LocalHost, guest: Guest, state: Path, metrics_port: int
) -> ManagedProcess:
    options = agent_options(plane, host, guest, state, metrics_port)
    return ManagedProcess(options.argv(), log=state / "agent.log")


@pytest.fixture(scope="session")
def stack(
    control_plane: ControlPlane,
    local_hosts: list[LocalHost],
    tiny_guest: Guest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    control_plane.kubectl("create", "namespace", "kubevisor-system", check=False)
    root = tmp_path_factory.mktemp("stack")
    ports = free_ports(1 + len(local_hosts))
    controller = ManagedProcess(
        ControllerOptions(
            control_plane.kubeconfig,
            metrics_port=ports[0],
            # Lost hosts' VMs move after 20 s; long enough that an agent restarted by a test
            # is back first (agents renew an 8 s Lease).
            failover_grace=20,
        ).argv(),
        log=root / "controller.log",
    ).start()
    agents: dict[str, ManagedProcess] = {}
    options: dict[str, AgentOptions] = {}
    states: dict[str, Path] = {}
    metrics = {"controller": ports[0]}
    for host, port in zip(local_hosts, ports[1:], strict=True):
        states[host.name] = root / host.name
        states[host.name].mkdir()
        options[host.name] = agent_options(control_plane, host, tiny_guest, states[host.name], port)
        agents[host.name] = ManagedProcess(
            options[host.name].argv(), log=states[host.name] / "agent.log"
        ).start()
        metrics[host.name] = port
    stack = Stack(control_plane, local_hosts, controller, agents, states, metrics, options)
    try:
        for host in local_hosts:
            eventually(
                lambda h=host.name: host_ready(stack, h), timeout=60, what=f"host {host.name} Ready"
            )
        yield stack
    finally:
        for process in [controller, *agents.values()]:
            process.stop()
        for name, process in [("controller", controller), *agents.items()]:
            sys.stderr.write(f"\n--- {name} log (tail) ---\n{process.tail()}")


@pytest.fixture
def extra_host(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExtraHost]:
    """A third host, Ready. Ask for it before `namespace`, so the namespace's VMs are
    deleted while its agent still runs."""
    extra = ExtraHost(stack, tmp_path_factory.mktemp("extra-host"))
    try:
        yield extra.start()
    finally:
        extra.remove()


@pytest.fixture(scope="module")
def net_stack(stack: Stack) -> Iterator[NetStack]:
    """Two hosts with a real data plane (network namespaces, `--host-network=linux`) beside
    the shared stack, for one module (tests/netstack.py). Its VMs must be deleted
    before it ends."""
    missing = hosts.missing_prerequisites() + netns.missing_prerequisites()
    missing += [tool for tool in ("dnsmasq", "nft") if shutil.which(tool) is None]
    require(
        not missing,
        what=f"hosts with a data plane (missing {', '.join(missing)})",
        how=f"{hosts.HOW_TO_INSTALL}; dnsmasq-base and nftables too",
    )
    # dnsmasq re-reads its hosts file in the agent's state directory as its own user: a
    # directory others may pass through, not pytest's 0700 ones.
    with container.traversable_directory() as state:
        net = NetStack(stack, state)
        try:
            yield net.start()
        finally:
            net.remove()


@pytest.fixture
def namespace(stack: Stack, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace per test; its VMs are deleted (and waited for) afterwards."""
    name = "e2e-" + request.node.name.replace("_", "-").lower()[:40].strip("-")
    stack.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        stack.kubectl(
            "delete", "vm", "--all", "-n", name, "--wait=true", "--timeout=120s", check=False
        )
        stack.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def ovmf() -> Ovmf:
    """Debian's OVMF, which a VM with UEFI firmware needs on the QEMU hosts."""
    firmware = Ovmf()
    require(
        Path(firmware.code).is_file() and Path(firmware.vars_template).is_file(),
        what=f"OVMF firmware ({firmware.code}, {firmware.vars_template})",
        how="apt-get install ovmf (or run hack/setup.sh)",
    )
    return firmware
