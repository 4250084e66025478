"""The local control plane is real: versioned, RBAC-enforcing, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from harness import REPO, controlplane_bin, require
from kubevisor.cli import main as cli
from kubevisor.testbed import controlplane, hosts, netns, stack
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
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's first command, end to end: the whole stack, the examples (where the
    hosts have a data plane, two VMs on an overlay with their addresses, held by their
    guests, one pinging the other), and down."""
    bin_dir = controlplane_bin()
    require(
        bin_dir is not None, what="control-plane binaries", how="run hack/controlplane/build.sh"
    )
    os.environ["KUBEVISOR_CONTROLPLANE_BIN"] = str(bin_dir)
    # dnsmasq re-reads its hosts file as its own user: no 0700 parents (pytest's tmp_path).
    root = Path(tempfile.mkdtemp(prefix="kubevisor-devup-"))
    root.chmod(0o755)
    state = root / "dev"
    data_plane = not hosts.missing_prerequisites() + netns.missing_data_plane_prerequisites()
    try:
        assert cli.main(["dev", "--state-dir", str(state), "up", "--timeout", "240"]) == 0
        plane = controlplane.load(state)
        assert plane is not None
        children = json.loads((state / "processes.json").read_text())
        _check_up(plane, capsys.readouterr().out, data_plane=data_plane)
        assert cli.main(["dev", "--state-dir", str(state), "down"]) == 0
    except BaseException:
        stack.stop(state)
        shutil.rmtree(root, ignore_errors=True)
        raise
    assert controlplane.load(state) is None
    for pid in (plane.apiserver_pid, plane.etcd_pid, *children.values()):
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"process {pid} still runs"
    assert not hosts.list_hosts(state / "hosts") or all(
        h.pid is None for h in hosts.list_hosts(state / "hosts")
    )
    # The hosts' namespaces, the underlay and the DHCP servers' namespaces (with their
    # dnsmasq) are gone.
    assert netns.namespaces(netns.underlay_for(state / "hosts").prefix) == []
    shutil.rmtree(root, ignore_errors=True)


def _check_up(plane: ControlPlane, out: str, *, data_plane: bool) -> None:
    assert f"export KUBECONFIG={plane.kubeconfig}" in out
    assert "every host is Ready" in out
    crds = plane.kubectl("get", "crd", "-o", "name").stdout.split()
    expected = {
        f"customresourcedefinition.apiextensions.k8s.io/{p.name[: -len('.yaml')]}"
        for p in (REPO / "deploy" / "crds").glob("*.yaml")
    }
    assert expected <= set(crds)
    vms = json.loads(plane.kubectl("get", "vm", "-o", "json").stdout)["items"]
    status = {vm["metadata"]["name"]: vm["status"] for vm in vms}
    phases = {name: found["phase"] for name, found in status.items()}
    assert phases["minimal"] == "Running", phases
    assert [phases[f"web-{i}"] for i in range(3)] == ["Running"] * 3, phases
    if not data_plane:
        return
    assert (phases["blue-a"], phases["blue-b"]) == ("Running", "Running"), phases
    assert status["blue-a"]["host"] != status["blue-b"]["host"]
    a, b = (status[name]["interfaces"][0]["ipAddresses"][0] for name in ("blue-a", "blue-b"))
    shown = {row.split()[0]: row for row in out.splitlines() if row.startswith("virtualmachine")}
    assert shown["virtualmachine.kubevisor.io/blue-a"].split()[-1] == a, out  # IP, -o wide
    assert f"blue-a: its guest holds {a}/24 on eth0 by DHCP" in out
    assert f"blue-b: its guest holds {b}/24 on eth0 by DHCP" in out
    # A real packet from one guest to the other, across the hosts' overlay.
    ping = ["ping", "-c", "1", "-W", "5", b]
    assert (
        cli.main(["dev", "--state-dir", str(plane.state_dir), "exec", "blue-a", "--", *ping]) == 0
    )


def _is_zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def _go_mod_kubernetes_version() -> str:
    for line in (REPO / "hack" / "controlplane" / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "k8s.io/kubernetes":
            return parts[1]
    raise AssertionError("hack/controlplane/go.mod requires no k8s.io/kubernetes")
