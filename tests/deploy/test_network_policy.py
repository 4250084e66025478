"""Provider Networks are for cluster admins: deploy/manifests/network-admission-policy.yaml
on the real API server, with real users.

Two users edit Networks in two namespaces (a Role granting every verb on networks, as a
team's own role would): `alice`, a tenant, and `nadia`, who is also bound to the
ClusterRole kubevisor-network-admin in the first namespace only (a RoleBinding: provider
Networks shared with that namespace). Both may do anything with overlay Networks; only
nadia, only there, may create, change or delete provider ones. The controller removes its
finalizer from a provider Network without that permission.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import REPO, eventually
from kubevisor.testbed.controlplane import ControlPlane

pytestmark = pytest.mark.apiserver

MANIFESTS = REPO / "deploy" / "manifests"
POLICY = "kubevisor-provider-networks"
POLICY_FILE = MANIFESTS / "network-admission-policy.yaml"
SYSTEM = "kubevisor-system"
CONTROLLER = f"system:serviceaccount:{SYSTEM}:kubevisor-controller"
SA_GROUPS = ["system:serviceaccounts", f"system:serviceaccounts:{SYSTEM}", "system:authenticated"]
FINALIZER = "kubevisor.io/network-in-use"


@dataclass(frozen=True)
class World:
    plane: ControlPlane
    shared: str
    """The namespace nadia manages provider Networks in."""
    other: str
    """A namespace where both users are tenants only."""
    alice: Path
    nadia: Path
    controller: Path


def network(name: str, kind: str, *, dhcp: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": kind, "subnet": {"cidr": "10.20.0.0/24"}, "dhcp": dhcp}
    if kind == "provider":
        spec["provider"] = {"physicalNetwork": "physnet1", "vlan": 120}
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "Network",
        "metadata": {"name": name},
        "spec": spec,
    }


def binding(name: str, role_kind: str, role: str, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


EDITOR = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "Role",
    "metadata": {"name": "network-editor"},
    "rules": [
        {
            "apiGroups": ["kubevisor.io"],
            "resources": ["networks"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        }
    ],
}


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    plane = control_plane
    suffix = uuid.uuid4().hex[:6]
    shared, other = f"vnet-shared-{suffix}", f"vnet-other-{suffix}"
    plane.kubectl("create", "namespace", SYSTEM, check=False)
    plane.kubectl("apply", "--server-side", "-f", str(MANIFESTS / "controller-rbac.yaml"))
    for namespace in (shared, other):
        plane.kubectl("create", "namespace", namespace)
        objects = [
            EDITOR,
            binding("alice-edits", "Role", "network-editor", "alice"),
            binding("nadia-edits", "Role", "network-editor", "nadia"),
        ]
        if namespace == shared:
            objects.append(
                binding("nadia-admin", "ClusterRole", "kubevisor-network-admin", "nadia")
            )
        for obj in objects:
            plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))
    plane.kubectl("apply", "--server-side", "-f", str(POLICY_FILE))
    try:
        yield World(
            plane=plane,
            shared=shared,
            other=other,
            alice=plane.credentials("alice", groups=["system:authenticated"]),
            nadia=plane.credentials("nadia", groups=["system:authenticated"]),
            controller=plane.credentials(CONTROLLER, groups=SA_GROUPS),
        )
    finally:
        for namespace in (shared, other):
            plane.kubectl("delete", "networks", "--all", "-n", namespace, "--wait=false")
        plane.kubectl("delete", "-f", str(POLICY_FILE), check=False)
        for namespace in (shared, other):
            plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def enforced(world: World) -> World:
    """The policy is in force (the API server loads it asynchronously)."""
    name = f"probe-{uuid.uuid4().hex[:6]}"

    def refused() -> bool:
        done = create(world, world.alice, world.shared, network(name, "provider"), dry_run=True)
        return done.returncode != 0 and POLICY in done.stderr

    eventually(refused, timeout=30, what=f"{POLICY} to be enforced")
    return world


def create(
    world: World, user: Path, namespace: str, obj: dict[str, Any], *, dry_run: bool = False
) -> Any:
    args = ["create", "-n", namespace, "-f", "-"]
    if dry_run:
        args.append("--dry-run=server")
    return world.plane.kubectl(*args, input=json.dumps(obj), kubeconfig=user, check=False)


def patch(world: World, user: Path, namespace: str, name: str, body: dict[str, Any]) -> Any:
    return world.plane.kubectl(
        "patch", "network", name, "-n", namespace, "--type=merge", "-p", json.dumps(body),
        kubeconfig=user, check=False,
    )  # fmt: skip


def delete(world: World, user: Path, namespace: str, name: str) -> Any:
    return world.plane.kubectl(
        "delete", "network", name, "-n", namespace, "--wait=false", kubeconfig=user, check=False
    )


def admin_creates(world: World, namespace: str, kind: str) -> str:
    name = f"{kind}-{uuid.uuid4().hex[:6]}"
    world.plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(network(name, kind)))
    return name


def exists(world: World, namespace: str, name: str) -> bool:
    done = world.plane.kubectl("get", "network", name, "-n", namespace, "--ignore-not-found")
    return bool(done.stdout.strip())


def assert_refused(done: Any, *, user: str, verb: str, namespace: str) -> None:
    assert done.returncode != 0, done.stdout
    message = done.stderr
    assert f"ValidatingAdmissionPolicy '{POLICY}'" in message, message
    assert (
        f"provider Networks are for cluster admins: {user} may not {verb} networks/provider "
        f"in namespace {namespace}"
    ) in message, message


@pytest.mark.parametrize(
    ("user", "namespace", "allowed"),
    [
        pytest.param("nadia", "shared", True, id="network-admin-where-bound"),
        pytest.param("nadia", "other", False, id="network-admin-elsewhere"),
        pytest.param("alice", "shared", False, id="tenant"),
    ],
)
def test_who_may_create_networks_provider(
    world: World, user: str, namespace: str, allowed: bool
) -> None:
    where = world.shared if namespace == "shared" else world.other
    done = world.plane.kubectl(
        "auth", "can-i", "create", "networks.kubevisor.io", "--subresource=provider", "-n", where,
        kubeconfig=getattr(world, user), check=False,
    )  # fmt: skip
    assert done.stdout.strip() == ("yes" if allowed else "no")


@pytest.mark.parametrize("user", ["alice", "nadia"])
@pytest.mark.parametrize("namespace", ["shared", "other"])
def test_anyone_editing_networks_manages_overlays(
    enforced: World, user: str, namespace: str
) -> None:
    world, me = enforced, getattr(enforced, user)
    where = world.shared if namespace == "shared" else world.other
    name = f"overlay-{user}-{uuid.uuid4().hex[:6]}"
    assert create(world, me, where, network(name, "overlay")).returncode == 0
    assert patch(world, me, where, name, {"spec": {"dhcp": False}}).returncode == 0
    assert delete(world, me, where, name).returncode == 0


def test_a_tenant_cannot_create_a_provider_network(enforced: World) -> None:
    world = enforced
    name = f"sneaky-{uuid.uuid4().hex[:6]}"
    done = create(world, world.alice, world.shared, network(name, "provider"))
    assert_refused(done, user="alice", verb="create", namespace=world.shared)
    assert not exists(world, world.shared, name)


def test_the_network_admin_creates_provider_networks_only_where_bound(enforced: World) -> None:
    world = enforced
    name = f"uplink-{uuid.uuid4().hex[:6]}"
    assert create(world, world.nadia, world.shared, network(name, "provider")).returncode == 0
    assert exists(world, world.shared, name)
    done = create(world, world.nadia, world.other, network(name, "provider"))
    assert_refused(done, user="nadia", verb="create", namespace=world.other)
    assert not exists(world, world.other, name)


def test_a_tenant_cannot_change_or_delete_a_provider_network(enforced: World) -> None:
    world = enforced
    name = admin_creates(world, world.shared, "provider")
    changed = patch(world, world.alice, world.shared, name, {"spec": {"dhcp": False}})
    assert_refused(changed, user="alice", verb="create", namespace=world.shared)
    deleted = delete(world, world.alice, world.shared, name)
    assert_refused(deleted, user="alice", verb="delete", namespace=world.shared)
    assert exists(world, world.shared, name)
    spec = json.loads(
        world.plane.kubectl("get", "network", name, "-n", world.shared, "-o", "json").stdout
    )["spec"]
    assert spec["dhcp"] is True
    # What leaves the spec alone is not the policy's business.
    labelled = patch(world, world.alice, world.shared, name, {"metadata": {"labels": {"a": "b"}}})
    assert labelled.returncode == 0, labelled.stderr


def test_the_network_admin_changes_and_deletes_provider_networks(enforced: World) -> None:
    world = enforced
    name = admin_creates(world, world.shared, "provider")
    assert patch(world, world.nadia, world.shared, name, {"spec": {"dhcp": False}}).returncode == 0
    assert delete(world, world.nadia, world.shared, name).returncode == 0
    eventually(lambda: not exists(world, world.shared, name), timeout=30, what="its deletion")


def test_the_controller_manages_the_finalizer_of_a_provider_network(enforced: World) -> None:
    world = enforced
    name = admin_creates(world, world.shared, "provider")
    on = patch(
        world, world.controller, world.shared, name, {"metadata": {"finalizers": [FINALIZER]}}
    )
    assert on.returncode == 0, on.stderr
    off = patch(world, world.controller, world.shared, name, {"metadata": {"finalizers": None}})
    assert off.returncode == 0, off.stderr
    # Its RBAC lets it patch Networks, the policy keeps it from changing a provider's spec.
    changed = patch(world, world.controller, world.shared, name, {"spec": {"dhcp": False}})
    assert_refused(changed, user=CONTROLLER, verb="create", namespace=world.shared)
