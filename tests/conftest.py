"""Fixtures shared by every tier: the real control plane (session scope)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness import REPO, controlplane_bin, require
from kubevisor.testbed import controlplane
from kubevisor.testbed.controlplane import ControlPlane


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A real kube-apiserver + etcd for the whole session, with kubevisor's CRDs installed."""
    bin_dir = controlplane_bin()
    require(
        bin_dir is not None,
        what="the local kube-apiserver + etcd",
        how="build them with hack/controlplane/build.sh (or run `make test`)",
    )
    assert bin_dir is not None
    plane = controlplane.start(
        bin_dir=bin_dir,
        state_dir=tmp_path_factory.mktemp("controlplane"),
        crd_paths=sorted((REPO / "deploy" / "crds").glob("*.yaml")),
    )
    print(f"\nkube-apiserver {plane.version} at {plane.server}")
    try:
        yield plane
    finally:
        controlplane.stop(plane.state_dir)
