"""`kubevisor diagnose`: redaction and the bundle's text (pure), and on a real API server
with the controller process: a VM the controller refuses (Unschedulable) gives a tarball
that says why, with its Event, and holds none of its secrets."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handlers.apiserver import (
    NAMESPACE,
    apply,
    controller_process,
    heartbeat,
    own_plane,
    patch_status,
)
from handlers.apiserver import get as kubectl_get
from harness import ManagedProcess, eventually
from kubevisor.cli import diagnose, main
from kubevisor.cli.diagnose import REDACTED
from kubevisor.testbed.controlplane import ControlPlane

SECRET = "hunter2-do-not-leak"


@pytest.mark.parametrize(
    ("given", "wanted"),
    [
        pytest.param(
            {"spec": {"cloudInit": {"userData": f"#cloud-config\npassword: {SECRET}"}}},
            {"spec": {"cloudInit": {"userData": REDACTED}}},
            id="cloud-init-user-data",
        ),
        pytest.param(
            {"metadata": {"annotations": {diagnose.LAST_APPLIED: SECRET, "team": "db"}}},
            {"metadata": {"annotations": {diagnose.LAST_APPLIED: REDACTED, "team": "db"}}},
            id="last-applied-copies-the-spec",
        ),
        pytest.param(
            {"spec": {"fencing": {"credentialsSecretRef": {"name": "bmc"}, "password": "x"}}},
            {"spec": {"fencing": {"credentialsSecretRef": {"name": "bmc"}, "password": REDACTED}}},
            id="secret-reference-keeps-its-name",
        ),
        pytest.param(
            {"metadata": {"name": "a", "managedFields": [{"manager": "kubectl"}]}},
            {"metadata": {"name": "a"}},
            id="managed-fields-dropped",
        ),
        pytest.param(
            {"items": [{"adminToken": "t", "tokens": 3}]},
            {"items": [{"adminToken": REDACTED, "tokens": 3}]},
            id="in-lists-and-by-suffix",
        ),
    ],
)
def test_redact(given: dict[str, Any], wanted: dict[str, Any]) -> None:
    assert diagnose.redact(given) == wanted


def test_event_lines_are_oldest_first_with_counts() -> None:
    events = [
        {"lastTimestamp": "2026-01-01T00:00:09Z", "type": "Normal", "reason": "B", "message": "b"},
        {"lastTimestamp": "2026-01-01T00:00:01Z", "type": "Warning", "reason": "A",
         "message": "a", "count": 3},
    ]  # fmt: skip
    assert diagnose.event_lines(events) == [
        "2026-01-01T00:00:01Z Warning A (x3): a",
        "2026-01-01T00:00:09Z Normal B: b",
    ]
    assert diagnose.event_lines([])[0].startswith("no events")


def test_write_makes_a_directory_or_a_tarball_with_one_top_directory(tmp_path: Path) -> None:
    files = {"summary.txt": "s\n", "vm.yaml": "v\n"}
    diagnose.write(files, tmp_path / "out")
    assert {p.name: p.read_text() for p in (tmp_path / "out").iterdir()} == files
    diagnose.write(files, tmp_path / "deep" / "db.tar.gz")
    assert read_tarball(tmp_path / "deep" / "db.tar.gz") == {
        "db/summary.txt": "s\n",
        "db/vm.yaml": "v\n",
    }


# -- on a real API server, with the controller ------------------------------------------------


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """This module's own control plane: the e2e stack's controller must not see its VMs."""
    with own_plane(tmp_path_factory.mktemp("plane")) as started:
        yield started


@pytest.fixture
def controller(plane: ControlPlane, tmp_path: Path) -> Iterator[ManagedProcess]:
    with controller_process(plane, tmp_path) as process:
        process.start()
        yield process


def read_tarball(path: Path) -> dict[str, str]:
    with tarfile.open(path) as tar:
        return {
            member.name: tar.extractfile(member).read().decode()  # type: ignore[union-attr]
            for member in tar.getmembers()
        }


@pytest.mark.apiserver
def test_diagnose_of_a_vm_the_controller_refuses_says_why_and_leaks_no_secret(
    plane: ControlPlane,
    controller: ManagedProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    apply(plane, {"apiVersion": "kubevisor.io/v1alpha1", "kind": "HypervisorHost",
                  "metadata": {"name": "h1"}, "spec": {}})  # fmt: skip
    patch_status(plane, "hvh", "h1", status={
        "hypervisor": {"type": "kvm"},
        "capacity": {"cpu": 4, "memory": "4Gi", "disk": "50Gi"},
        "numaCells": [{"id": 0, "cpus": [0, 1, 2, 3], "memory": "4Gi"}],
    })  # fmt: skip
    heartbeat(plane, "h1")

    def ready(host: dict[str, Any]) -> bool:
        found = [c for c in (host.get("status") or {}).get("conditions") or []
                 if c["type"] == "Ready"]  # fmt: skip
        return bool(found) and found[0]["status"] == "True"

    # Judged Ready first: placement then refuses the VM for its memory, not for no host.
    eventually(lambda: ready(kubectl_get(plane, "hvh", "h1")), timeout=60, what="h1 Ready")
    # kubectl apply: the last-applied annotation holds a second copy of the user data.
    apply(plane, {
        "apiVersion": "kubevisor.io/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": "big", "namespace": NAMESPACE},
        "spec": {"memory": {"size": "64Gi"},
                 "cloudInit": {"userData": f"#cloud-config\npassword: {SECRET}\n"}},
    })  # fmt: skip
    eventually(
        lambda: (
            (kubectl_get(plane, "vm", "big", "-n", NAMESPACE).get("status") or {}).get("phase")
            == "Unschedulable"
        ),
        timeout=60,
        what="the controller refusing the VM",
    )

    eventually(
        lambda: "FailedScheduling" in plane.kubectl("get", "events", "-n", NAMESPACE).stdout,
        timeout=30,
        what="the controller's FailedScheduling Event",
    )

    bundle = tmp_path / "big.tar.gz"
    argv = ["diagnose", "big", "-n", NAMESPACE, "-o", str(bundle)]
    assert main.main([*argv, "--kubeconfig", str(plane.kubeconfig)]) == 0
    assert capsys.readouterr().out == f"virtualmachine.kubevisor.io/big: 5 files in {bundle}\n"
    files = read_tarball(bundle)
    assert sorted(files) == [
        f"big/{f}"
        for f in ("conditions.txt", "events.txt", "placement.txt", "summary.txt", "vm.yaml")
    ]
    assert all(SECRET not in text for text in files.values())
    assert f"userData: {REDACTED}" in files["big/vm.yaml"]
    assert "phase: Unschedulable" in files["big/conditions.txt"]
    assert "Scheduled=False Unschedulable" in files["big/conditions.txt"]
    why = "0/1 host fit: 1 more memory than the host has (need 64Gi, best has 4Gi in all)"
    assert f"Ready=False Unschedulable: {why}" in files["big/summary.txt"]
    assert f"is on no host: {why}" in files["big/placement.txt"]
    assert f"what-if: {NAMESPACE}/big fits nowhere" in files["big/placement.txt"]
    assert f" Warning FailedScheduling: {why}" in files["big/events.txt"]
    assert f"virsh -c qemu:///system dumpxml {NAMESPACE}_big" in files["big/summary.txt"]
