"""Teams and cluster admins (deploy/manifests/tenant-rbac.yaml), shown on the real API server.

A team gets Kubernetes' built-in `edit` (or `view`, or `admin`) in its namespace, as it
would for anything else; kubevisor's roles are aggregated into those. It can then manage
its VMs — kubectl, and the kubevisor CLI's verbs, which are API calls — and nothing of
another namespace, of the hosts (beyond reading them, with kubevisor-hosts-view), of
quotas or of host pools: those are real calls the API server refuses. A cluster admin
with kubevisor-cluster-admin does what the team may not.

No kube-controller-manager runs in the test control plane, so nothing aggregates the
built-in roles by itself: `aggregate` does what its ClusterRole aggregation controller does
(each role with an aggregationRule gets the union of the rules of every ClusterRole its
selectors match, until nothing changes), from the labels the API server holds.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import REPO
from kubevisor.api.wire import HOST_SELECTOR_ANNOTATION
from kubevisor.cli import main as cli
from kubevisor.testbed.controlplane import ControlPlane

pytestmark = pytest.mark.apiserver

ROLES = REPO / "deploy" / "manifests" / "tenant-rbac.yaml"


@dataclass(frozen=True)
class Tenancy:
    plane: ControlPlane
    mine: str
    """The team's namespace, where it has `edit` (alice), `view` (vic) and `admin` (ada)."""
    theirs: str
    """Another team's namespace, with a VM the team must not touch."""
    host: str
    alice: Path
    vic: Path
    ada: Path
    ops: Path
    """A cluster admin with kubevisor-cluster-admin."""


def _match(labels: dict[str, str], selectors: list[dict[str, Any]]) -> bool:
    return any(
        all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())
        for selector in selectors
    )


def aggregate(plane: ControlPlane) -> None:
    """The ClusterRole aggregation controller's work, to a fixed point."""
    for _ in range(10):
        roles = json.loads(plane.kubectl("get", "clusterroles", "-o", "json").stdout)["items"]
        changed = False
        for role in roles:
            rule = role.get("aggregationRule")
            if not rule:
                continue
            selectors = rule.get("clusterRoleSelectors") or []
            wanted: list[dict[str, Any]] = []
            for other in roles:
                labels = other["metadata"].get("labels") or {}
                if other is role or not _match(labels, selectors):
                    continue
                wanted.extend(r for r in other.get("rules") or [] if r not in wanted)
            if wanted != (role.get("rules") or []):
                patch = json.dumps({"rules": wanted})
                name = role["metadata"]["name"]
                plane.kubectl("patch", "clusterrole", name, "--type=merge", "-p", patch)
                changed = True
        if not changed:
            return
    raise AssertionError("ClusterRole aggregation did not settle in 10 rounds")


def vm(name: str, namespace: str) -> dict[str, object]:
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"runStrategy": "Always", "memory": {"size": "64Mi"}},
    }


@pytest.fixture(scope="module")
def tenancy(control_plane: ControlPlane) -> Iterator[Tenancy]:
    plane = control_plane
    suffix = uuid.uuid4().hex[:6]
    mine, theirs, host = f"team-a-{suffix}", f"team-b-{suffix}", f"tenancy-hv-{suffix}"
    users = {name: f"{name}-{suffix}" for name in ("alice", "vic", "ada", "ops")}
    bindings = [f"{users['alice']}-hosts", f"{users['ops']}-ops"]
    for namespace in (mine, theirs):
        plane.kubectl("create", "namespace", namespace)
    plane.kubectl("apply", "--server-side", "-f", str(ROLES))
    try:
        aggregate(plane)
        for user, role in (("alice", "edit"), ("vic", "view"), ("ada", "admin")):
            plane.kubectl(
                "create",
                "rolebinding",
                user,
                "-n",
                mine,
                f"--clusterrole={role}",
                f"--user={users[user]}",
            )
        plane.kubectl(
            "create",
            "clusterrolebinding",
            bindings[0],
            "--clusterrole=kubevisor-hosts-view",
            f"--user={users['alice']}",
        )
        plane.kubectl(
            "create",
            "clusterrolebinding",
            bindings[1],
            "--clusterrole=kubevisor-cluster-admin",
            f"--user={users['ops']}",
        )
        plane.kubectl("create", "-f", "-", input=json.dumps(vm("theirs", theirs)))
        plane.kubectl(
            "create",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "kubevisor.io/v1alpha1",
                    "kind": "HypervisorHost",
                    "metadata": {"name": host},
                    "spec": {},
                }
            ),
        )
        yield Tenancy(
            plane=plane,
            mine=mine,
            theirs=theirs,
            host=host,
            alice=plane.credentials(users["alice"]),
            vic=plane.credentials(users["vic"]),
            ada=plane.credentials(users["ada"]),
            ops=plane.credentials(users["ops"]),
        )
    finally:
        plane.kubectl("delete", "hvh", host, check=False)
        plane.kubectl("delete", "clusterrolebinding", *bindings, check=False)
        for namespace in (mine, theirs):
            plane.kubectl("delete", "vm,migrationjob", "--all", "-n", namespace, check=False)
            plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        plane.kubectl("delete", "-f", str(ROLES), check=False)
        aggregate(plane)  # the built-in roles without kubevisor's rules again


def can_i(t: Tenancy, who: Path, verb: str, resource: str, where: str) -> bool:
    """Whether the API server lets `who` do it: a SelfSubjectAccessReview, the question the
    console API asks too. `resource` is "plural.group", with "/subresource" if any."""
    resource, _, sub = resource.partition("/")
    plural, _, group = resource.partition(".")
    attributes = {"verb": verb, "group": group, "resource": plural, "subresource": sub}
    if where:
        attributes["namespace"] = {"mine": t.mine, "theirs": t.theirs}[where]
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    done = t.plane.kubectl(
        "create",
        "--validate=false",
        "-f",
        "-",
        "-o",
        "json",
        input=json.dumps(review),
        kubeconfig=who,
    )
    return bool(json.loads(done.stdout)["status"].get("allowed"))


VMS, JOBS, NETS = (
    "virtualmachines.kubevisor.io",
    "migrationjobs.kubevisor.io",
    "networks.kubevisor.io",
)
CONSOLE = "virtualmachines.subresources.kubevisor.io/console"
VNC = "virtualmachines.subresources.kubevisor.io/vnc"
DIAGNOSE = "virtualmachines.subresources.kubevisor.io/diagnose"
HOSTS = "hypervisorhosts.kubevisor.io"

CAN = [
    # `edit` in its namespace, and kubevisor-hosts-view
    pytest.param("alice", "create", VMS, "mine", True, id="edit-create-vms"),
    pytest.param("alice", "patch", VMS, "mine", True, id="edit-start-stop-resize-vms"),
    pytest.param("alice", "delete", VMS, "mine", True, id="edit-delete-vms"),
    pytest.param("alice", "create", JOBS, "mine", True, id="edit-migrate"),
    pytest.param("alice", "patch", JOBS, "mine", True, id="edit-cancel-migration"),
    pytest.param("alice", "get", CONSOLE, "mine", True, id="edit-console"),
    pytest.param("alice", "get", VNC, "mine", True, id="edit-vnc"),
    pytest.param("alice", "get", DIAGNOSE, "mine", True, id="edit-diagnose"),
    pytest.param("alice", "create", NETS, "mine", True, id="edit-overlay-networks"),
    pytest.param(
        "alice", "create", f"{NETS}/provider", "mine", False, id="edit-no-provider-networks"
    ),
    pytest.param("alice", "patch", f"{VMS}/status", "mine", False, id="edit-no-vm-status"),
    pytest.param("alice", "patch", f"{JOBS}/status", "mine", False, id="edit-no-migration-status"),
    pytest.param("alice", "get", VMS, "theirs", False, id="edit-no-vms-elsewhere"),
    pytest.param("alice", "create", JOBS, "theirs", False, id="edit-no-migrations-elsewhere"),
    pytest.param("alice", "get", CONSOLE, "theirs", False, id="edit-no-console-elsewhere"),
    pytest.param("alice", "get", HOSTS, "", True, id="edit-read-hosts"),
    pytest.param("alice", "patch", HOSTS, "", False, id="edit-no-host-writes"),
    pytest.param("alice", "delete", HOSTS, "", False, id="edit-no-host-deletes"),
    pytest.param("alice", "create", "resourcequotas", "mine", False, id="edit-no-quotas"),
    pytest.param("alice", "patch", "resourcequotas", "mine", False, id="edit-no-quota-changes"),
    pytest.param("alice", "patch", "namespaces", "", False, id="edit-no-host-pools"),
    # `view` in its namespace
    pytest.param("vic", "get", VMS, "mine", True, id="view-read-vms"),
    pytest.param("vic", "watch", JOBS, "mine", True, id="view-read-migrations"),
    pytest.param("vic", "list", NETS, "mine", True, id="view-read-networks"),
    pytest.param("vic", "patch", VMS, "mine", False, id="view-no-start-stop"),
    pytest.param("vic", "create", JOBS, "mine", False, id="view-no-migrate"),
    pytest.param("vic", "get", CONSOLE, "mine", False, id="view-no-console"),
    pytest.param("vic", "get", VNC, "mine", False, id="view-no-vnc"),
    pytest.param("vic", "get", DIAGNOSE, "mine", False, id="view-no-diagnose"),
    pytest.param("vic", "get", HOSTS, "", False, id="view-no-hosts-without-the-binding"),
    # `admin` in its namespace
    pytest.param("ada", "delete", VMS, "mine", True, id="admin-delete-vms"),
    pytest.param("ada", "get", CONSOLE, "mine", True, id="admin-console"),
    pytest.param("ada", "create", JOBS, "mine", True, id="admin-migrate"),
    pytest.param("ada", "patch", "resourcequotas", "mine", False, id="admin-no-quota-changes"),
    pytest.param("ada", "patch", "namespaces", "", False, id="admin-no-host-pools"),
    pytest.param("ada", "patch", HOSTS, "", False, id="admin-no-host-writes"),
    # kubevisor-cluster-admin
    pytest.param("ops", "patch", HOSTS, "", True, id="cluster-admin-hosts"),
    pytest.param(
        "ops", "create", f"{NETS}/provider", "theirs", True, id="cluster-admin-provider-networks"
    ),
    pytest.param("ops", "patch", "resourcequotas", "theirs", True, id="cluster-admin-quotas"),
    pytest.param("ops", "patch", "namespaces", "", True, id="cluster-admin-host-pools"),
    pytest.param("ops", "delete", VMS, "theirs", True, id="cluster-admin-any-vm"),
    pytest.param("ops", "patch", f"{HOSTS}/status", "", False, id="cluster-admin-no-host-status"),
]


@pytest.mark.parametrize(("who", "verb", "resource", "where", "allowed"), CAN)
def test_can_i(
    tenancy: Tenancy, who: str, verb: str, resource: str, where: str, allowed: bool
) -> None:
    user: Path = getattr(tenancy, who)
    assert can_i(tenancy, user, verb, resource, where) is allowed


# -- real calls ------------------------------------------------------------------------------


def kubevisor(who: Path, *argv: str) -> int:
    """The kubevisor CLI with `who`'s credentials."""
    return cli.main([*argv, f"--kubeconfig={who}"])


def refused(t: Tenancy, who: Path, *args: str) -> str:
    """kubectl `args` as `who`, which the API server must refuse; its message."""
    done = t.plane.kubectl(*args, kubeconfig=who, check=False)
    assert done.returncode != 0, f"{' '.join(args)} was allowed"
    assert "forbidden" in done.stderr.lower(), done.stderr
    return done.stderr


def test_a_team_manages_its_vms_with_kubectl_and_the_cli(tenancy: Tenancy) -> None:
    t = tenancy
    t.plane.kubectl(
        "create",
        "--validate=false",
        "-f",
        "-",
        input=json.dumps(vm("web", t.mine)),
        kubeconfig=t.alice,
    )
    assert kubevisor(t.alice, "stop", "web", "-n", t.mine) == 0
    assert kubevisor(t.alice, "start", "web", "-n", t.mine) == 0
    assert kubevisor(t.alice, "pause", "web", "-n", t.mine) == 0
    got = json.loads(
        t.plane.kubectl("get", "vm", "web", "-n", t.mine, "-o", "json", kubeconfig=t.vic).stdout
    )
    assert got["spec"]["runStrategy"] == "Always" and got["spec"]["paused"] is True
    assert kubevisor(t.alice, "migrate", "web", "-n", t.mine, "--to", t.host) == 0
    jobs = t.plane.kubectl("get", "migrationjobs", "-n", t.mine, "-o", "name", kubeconfig=t.alice)
    assert jobs.stdout.strip().startswith("migrationjob.kubevisor.io/web-migration-")
    # A viewer sees it all and changes nothing.
    assert "cannot patch resource" in refused(
        t,
        t.vic,
        "patch",
        "vm",
        "web",
        "-n",
        t.mine,
        "--type=merge",
        "-p",
        '{"spec":{"runStrategy":"Halted"}}',
    )
    t.plane.kubectl("delete", "vm", "web", "-n", t.mine, kubeconfig=t.alice)


def test_a_team_cannot_touch_another_namespace(tenancy: Tenancy) -> None:
    t = tenancy
    refused(t, t.alice, "get", "vm", "theirs", "-n", t.theirs)
    refused(
        t,
        t.alice,
        "patch",
        "vm",
        "theirs",
        "-n",
        t.theirs,
        "--type=merge",
        "-p",
        '{"spec":{"runStrategy":"Halted"}}',
    )
    refused(t, t.alice, "delete", "vm", "theirs", "-n", t.theirs)
    assert kubevisor(t.alice, "stop", "theirs", "-n", t.theirs) != 0
    theirs = json.loads(t.plane.kubectl("get", "vm", "theirs", "-n", t.theirs, "-o", "json").stdout)
    assert theirs["spec"]["runStrategy"] == "Always"


def test_a_team_reads_hosts_and_changes_neither_them_nor_quotas_nor_pools(
    tenancy: Tenancy,
) -> None:
    t = tenancy
    t.plane.kubectl("get", "hvh", t.host, kubeconfig=t.alice)
    for who in (t.alice, t.ada):
        refused(
            t, who, "patch", "hvh", t.host, "--type=merge", "-p", '{"spec":{"maintenance":true}}'
        )
        refused(
            t,
            who,
            "patch",
            "hvh",
            t.host,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"reservedFor": [t.mine]}}),
        )
        refused(t, who, "delete", "hvh", t.host)
        refused(t, who, "annotate", "namespace", t.mine, f"{HOST_SELECTOR_ANNOTATION}=pool=any")
        refused(
            t,
            who,
            "create",
            "quota",
            "more",
            "-n",
            t.mine,
            "--hard=count/virtualmachines.kubevisor.io=99",
        )
    host = json.loads(t.plane.kubectl("get", "hvh", t.host, "-o", "json").stdout)
    assert host["spec"].get("maintenance") in (None, False) and not host["spec"].get("reservedFor")


def test_a_cluster_admin_sets_pools_reservations_and_quotas(tenancy: Tenancy) -> None:
    t = tenancy
    t.plane.kubectl(
        "annotate",
        "namespace",
        t.mine,
        "--overwrite",
        f"{HOST_SELECTOR_ANNOTATION}=pool=a",
        kubeconfig=t.ops,
    )
    t.plane.kubectl(
        "patch",
        "hvh",
        t.host,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"reservedFor": [t.mine]}}),
        kubeconfig=t.ops,
    )
    t.plane.kubectl(
        "create",
        "quota",
        "vms",
        "-n",
        t.mine,
        "--hard=count/virtualmachines.kubevisor.io=5",
        kubeconfig=t.ops,
    )
    host = json.loads(
        t.plane.kubectl("get", "hvh", t.host, "-o", "json", kubeconfig=t.alice).stdout
    )
    assert host["spec"]["reservedFor"] == [t.mine]
    # The team sees its quota (the built-in roles read ResourceQuotas) and cannot lift it.
    t.plane.kubectl("get", "quota", "vms", "-n", t.mine, kubeconfig=t.alice)
    refused(t, t.ada, "delete", "quota", "vms", "-n", t.mine)
