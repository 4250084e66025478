"""Fixtures for the controller's handler tests: a controller on an in-memory API server, or
on a real kube-apiserver of the test module's own (`plane`, `controller`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness import ManagedProcess
from kubevisor.core.migration import Limits
from kubevisor.handlers.controller import Settings
from kubevisor.testbed.controlplane import ControlPlane

from .apiserver import controller_process, own_plane
from .fake_cluster import LEASE_NAMESPACE, Cluster


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


@pytest.fixture
def one_at_a_time() -> Cluster:
    """At most one migration out of and into each host."""
    limits = Limits(per_cluster=5, outbound_per_host=1, inbound_per_host=1)
    return Cluster(Settings(lease_namespace=LEASE_NAMESPACE, migration_limits=limits))


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of the test module's own (tests on a real kube-apiserver)."""
    with own_plane(tmp_path_factory.mktemp("plane")) as started:
        yield started


@pytest.fixture(scope="module")
def controller(
    plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    """The controller process on the module's plane, started once for the module (a module
    that needs objects in place first creates them in its own `plane`)."""
    with controller_process(plane, tmp_path_factory.mktemp("controller")) as process:
        process.start()
        yield process
