"""Fixtures of the CLI tests: run `kubevisor` in-process or as a process, and write
objects (spec and status) on the real API server with kubectl."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubevisor.cli import main
from kubevisor.testbed.controlplane import ControlPlane

Object = dict[str, Any]


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


class Cli:
    """`kubevisor` against the test control plane, in this process (output via capsys)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], kubeconfig: Path | None) -> None:
        self.capsys = capsys
        self.kubeconfig = kubeconfig

    def __call__(self, *argv: str, connect: bool = True) -> Result:
        self.capsys.readouterr()
        extra = ["--kubeconfig", str(self.kubeconfig)] if connect and self.kubeconfig else []
        try:
            code = main.main([*argv, *extra])
        except SystemExit as exit_:  # argparse: --help and usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def spawn(self, *argv: str) -> subprocess.Popen[str]:
        """The same command as a separate process, for commands that block (--wait)."""
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubevisor.cli.main",
                *argv,
                "--kubeconfig",
                str(self.kubeconfig),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


class Objects:
    """Create, read and patch (spec or status) kubevisor objects with kubectl."""

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        self.plane = plane
        self.namespace = namespace

    def create(self, manifest: Object) -> Object:
        if manifest["kind"] != "HypervisorHost":
            manifest["metadata"].setdefault("namespace", self.namespace)
        done = self.plane.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(manifest))
        created: Object = json.loads(done.stdout)
        return created

    def vm(
        self, name: str, *, spec: Object | None = None, metadata: Object | None = None
    ) -> Object:
        return self.create(
            {
                "apiVersion": "kubevisor.io/v1alpha1",
                "kind": "VirtualMachine",
                "metadata": {"name": name, **(metadata or {})},
                "spec": {"memory": {"size": "64Mi"}, **(spec or {})},
            }
        )

    def get(self, kind: str, name: str) -> Object:
        args = ["get", kind, name, "-o", "json"]
        if kind not in ("hypervisorhost", "hvh"):
            args += ["-n", self.namespace]
        got: Object = json.loads(self.plane.kubectl(*args).stdout)
        return got

    def items(self, kind: str, selector: str = "") -> list[Object]:
        args = ["get", kind, "-n", self.namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[Object] = json.loads(self.plane.kubectl(*args).stdout)["items"]
        return items

    def patch_status(self, kind: str, name: str, status: Object) -> Object:
        args = ["patch", kind, name, "--subresource=status", "--type=merge", "-o", "json"]
        if kind not in ("hypervisorhost", "hvh"):
            args += ["-n", self.namespace]
        done = self.plane.kubectl(*args, "-p", json.dumps({"status": status}))
        patched: Object = json.loads(done.stdout)
        return patched


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A namespace per test module; its objects are deleted afterwards (no controller runs
    here to finalize them, and a bare API server never finishes deleting a namespace)."""
    name = f"cli-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    for kind in ("vm", "migrationjob"):
        control_plane.kubectl("delete", kind, "--all", "-n", name, "--wait=false", check=False)
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], control_plane: ControlPlane) -> Cli:
    return Cli(capsys, control_plane.kubeconfig)


@pytest.fixture
def offline_cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """For commands that never contact a cluster (create, --help, migrate --dry-run)."""
    return Cli(capsys, None)


@pytest.fixture
def objects(control_plane: ControlPlane, namespace: str) -> Objects:
    return Objects(control_plane, namespace)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def name() -> str:
    """A fresh object name per test."""
    return unique("vm")
