"""Pieces of the controller's tests on a real kube-apiserver (test_*_apiserver.py): each
module runs its own control plane, so that the e2e stack's controller, which may be
running on the session's, never acts on its objects."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import builders
import harness
from harness import ManagedProcess, running_control_plane
from kubevisor.testbed.controlplane import ControlPlane

from .fake_cluster import LEASE_NAMESPACE, lease

LEASES = LEASE_NAMESPACE
NAMESPACE = "apps"


@contextmanager
def own_plane(state: Path) -> Iterator[ControlPlane]:
    """A control plane with kubevisor's CRDs and the namespaces LEASES and NAMESPACE."""
    with running_control_plane(state) as started:
        for namespace in (LEASES, NAMESPACE):
            started.kubectl("create", "namespace", namespace)
        yield started


def apply(plane: ControlPlane, manifest: dict[str, Any]) -> None:
    plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def patch_status(plane: ControlPlane, *target: str, status: dict[str, Any]) -> None:
    plane.kubectl(
        "patch", *target, "--subresource=status", "--type=merge", "-p",
        json.dumps({"status": status}),
    )  # fmt: skip


def get(plane: ControlPlane, *target: str) -> dict[str, Any]:
    got: dict[str, Any] = json.loads(plane.kubectl("get", *target, "-o", "json").stdout)
    return got


def heartbeat(plane: ControlPlane, host: str) -> None:
    """A Lease of `host` renewed now and good for an hour: its agent is alive."""
    apply(plane, lease(host, datetime.now(UTC), duration=3600))


def ready_host(plane: ControlPlane, name: str, *, cpus: int, memory: str, **status: Any) -> None:
    """HypervisorHost `name` as its agent reports it (KVM, `cpus` CPUs and `memory` in one
    NUMA cell, 50Gi of disk, and `status` besides), heartbeating: a place for VMs."""
    apply(plane, builders.hvh(name))
    patch_status(
        plane,
        "hypervisorhost",
        name,
        status={
            "hypervisor": {"type": "kvm"},
            "capacity": {"cpu": cpus, "memory": memory, "disk": "50Gi"},
            "numaCells": [{"id": 0, "cpus": list(range(cpus)), "memory": memory}],
            **status,
        },
    )
    heartbeat(plane, name)


@contextmanager
def controller_process(plane: ControlPlane, log_dir: Path, *flags: str) -> Iterator[ManagedProcess]:
    """The controller process (not started yet) with `flags` added; its log's tail is
    printed when the test ends."""
    process = harness.controller_process(
        plane, lease_namespace=LEASES, log=log_dir / "controller.log", extra=flags
    )
    try:
        yield process
    finally:
        process.stop()
        sys.stderr.write(f"\n--- controller log (tail) ---\n{process.tail()}")
