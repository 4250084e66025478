"""The whole stack for end-to-end tests: a real control plane, the controller, and one
agent per real libvirtd host (two hosts), each a separate process like in production."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import require
from kubevisor.core.domain.host import Ovmf
from kubevisor.testbed import container, hosts, netns
from kubevisor.testbed.controlplane import ControlPlane
from kubevisor.testbed.guest import Guest
from kubevisor.testbed.hosts import LocalHost
from netstack import NetStack
from stacks import ExtraHost, Stack, start_stack, stop_stack


@pytest.fixture(scope="session")
def stack(
    control_plane: ControlPlane,
    local_hosts: list[LocalHost],
    tiny_guest: Guest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    started = start_stack(control_plane, local_hosts, tiny_guest, tmp_path_factory.mktemp("stack"))
    try:
        yield started
    finally:
        stop_stack(started)


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
