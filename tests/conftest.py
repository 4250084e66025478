"""Fixtures shared by every tier: the real control plane (session scope)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import require, running_control_plane, vcsim_bin
from kubevisor.testbed import container, guest, hosts, vcsim
from kubevisor.testbed.controlplane import ControlPlane
from kubevisor.testbed.guest import Guest
from kubevisor.testbed.hosts import LocalHost
from kubevisor.testbed.vcsim import Vcsim

APISERVER = pytest.StashKey[str]()


# The session fixture each marker stands for: a test that uses one (directly or through
# another fixture) carries its marker without saying so, so `-m "not vcsim"` and
# `make test-fast` leave it out even when its module forgot the mark.
FIXTURE_MARKERS = {"control_plane": "apiserver", "local_hosts": "libvirtd", "vcsim_server": "vcsim"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by the real infrastructure its fixtures start (FIXTURE_MARKERS)."""
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if marker := FIXTURE_MARKERS.get(fixture):
                item.add_marker(marker)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say which real API server the api and e2e tiers ran against."""
    if APISERVER in config.stash:
        terminalreporter.write_line(config.stash[APISERVER])


@pytest.fixture(scope="session")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[ControlPlane]:
    """A real kube-apiserver + etcd for the whole session, with kubevisor's CRDs installed."""
    with running_control_plane(tmp_path_factory.mktemp("controlplane")) as plane:
        reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
        line = f"api tier: real kube-apiserver {plane.version} + etcd at {plane.server}"
        if reporter is not None:
            reporter.write_line(f"\n{line}")
        pytestconfig.stash[APISERVER] = line
        yield plane


@pytest.fixture(scope="session")
def vcsim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    """vcsim, the vSphere API simulator, as a vCenter for the session (see testbed.vcsim)."""
    bin_dir = vcsim_bin()
    require(
        bin_dir is not None,
        what="vcsim (the vSphere API simulator)",
        how="build it with hack/vcsim/build.sh (or run `make test`)",
    )
    assert bin_dir is not None
    sim = vcsim.start(bin_dir, log=tmp_path_factory.mktemp("vcsim") / "vcsim.log")
    try:
        yield sim
    finally:
        vcsim.stop(sim)


@pytest.fixture(scope="session")
def local_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LocalHost]]:
    """Two real libvirtd "hypervisor hosts" on this machine (own namespaces, own ports)."""
    missing = hosts.missing_prerequisites()
    require(
        not missing, what=f"local libvirtd hosts ({', '.join(missing)})", how=hosts.HOW_TO_INSTALL
    )
    state = tmp_path_factory.mktemp("hosts")
    started = hosts.start_hosts(2, state_dir=state)
    try:
        yield started
    finally:
        hosts.stop_hosts(state)


@pytest.fixture(scope="session")
def tiny_guest() -> Guest:
    """The busybox guest (cloud kernel + initramfs) that prints a marker and counts."""
    try:
        return guest.build_guest(Path.home() / ".cache" / "kubevisor" / "guest")
    except guest.GuestBuildError as error:
        require(False, what="the tiny guest", how=str(error))
        raise


@pytest.fixture(scope="module")
def rootfs_dir() -> Iterator[Path]:
    """A directory for system containers' root filesystems (an LXC agent's --rootfs-dir)
    that a container's mapped root can reach, unlike pytest's 0700 temporary directories."""
    with container.traversable_directory() as directory:
        yield directory
