"""Fixtures for the controller's handler tests: a controller on an in-memory API server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kubevisor.core.migration import Limits
from kubevisor.handlers.controller import Settings
from kubevisor.testbed.controlplane import ControlPlane

from .apiserver import own_plane
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
