"""The local control plane is real: versioned, RBAC-enforcing, and leaves nothing behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness import REPO, controlplane_bin, require
from kubevisor.cli import main as cli
from kubevisor.testbed import controlplane, hosts, stack
from kubevisor.testbed.controlplane import ControlPlane

pytestmark = pytest.mark.apiserver


def test_apiserver_reports_the_version_it_was_built_as(control_plane: ControlPlane) -> None:
    wanted = _go_mod_kubernetes_version()
    assert control_plane.version == wanted
    reply = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert reply["serverVersion"]["gitVersion"] == wanted
    assert reply["clientVersion"]["gitVersion"] == wanted


def test_admin_is_cluster_admin(control_plane: ControlPlane) -> None:
    assert control_plane.kubectl("auth", "can-i", "*", "*").stdout.strip() == "yes"


def test_minted_user_without_roles_is_forbidden(control_plane: ControlPlane) -> None:
    nobody = control_plane.credentials("nobody", groups=["kubevisor:test"])
    denied = control_plane.kubectl("get", "namespaces", kubeconfig=nobody, check=False)
    assert denied.returncode != 0
    assert 'User "nobody" cannot list resource "namespaces"' in denied.stderr


def test_dev_up_runs_the_examples_then_down_leaves_no_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's first command, end to end: the whole stack, the examples, and down."""
    bin_dir = controlplane_bin()
    require(
        bin_dir is not None, what="control-plane binaries", how="run hack/controlplane/build.sh"
    )
    os.environ["KUBEVISOR_CONTROLPLANE_BIN"] = str(bin_dir)
    state = tmp_path / "dev"

    try:
        assert cli.main(["dev", "--state-dir", str(state), "up", "--timeout", "240"]) == 0
    except BaseException:
        stack.stop(state)
        raise
    plane = controlplane.load(state)
    assert plane is not None
    out = capsys.readouterr().out
    assert f"export KUBECONFIG={plane.kubeconfig}" in out
    assert "every host is Ready" in out
    crds = plane.kubectl("get", "crd", "-o", "name").stdout.split()
    expected = {
        f"customresourcedefinition.apiextensions.k8s.io/{p.name[: -len('.yaml')]}"
        for p in (REPO / "deploy" / "crds").glob("*.yaml")
    }
    assert expected <= set(crds)
    vms = json.loads(plane.kubectl("get", "vm", "-o", "json").stdout)["items"]
    phases = {vm["metadata"]["name"]: vm["status"]["phase"] for vm in vms}
    assert phases["minimal"] == "Running", phases
    assert [phases[f"web-{i}"] for i in range(3)] == ["Running"] * 3, phases
    children = json.loads((state / "processes.json").read_text())

    assert cli.main(["dev", "--state-dir", str(state), "down"]) == 0
    assert controlplane.load(state) is None
    for pid in (plane.apiserver_pid, plane.etcd_pid, *children.values()):
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"process {pid} still runs"
    assert not hosts.list_hosts(state / "hosts") or all(
        h.pid is None for h in hosts.list_hosts(state / "hosts")
    )


def _is_zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def _go_mod_kubernetes_version() -> str:
    for line in (REPO / "hack" / "controlplane" / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "k8s.io/kubernetes":
            return parts[1]
    raise AssertionError("hack/controlplane/go.mod requires no k8s.io/kubernetes")
