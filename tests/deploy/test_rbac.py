"""Least privilege, shown against the real API server with the RBAC and admission policy of
deploy/manifests applied.

Two kinds of agent credential:
- a client certificate whose user and groups are the agent ServiceAccount's (RBAC binds a
  ServiceAccount subject by user name, so RBAC treats it as the agent): `kubectl auth
  can-i` tables for both components, and real calls RBAC forbids;
- real bound ServiceAccount tokens of two agent pods on two nodes (TokenRequest bound to a
  Pod with spec.nodeName), which carry the node name the admission policy compares: an
  agent writes its own host, Lease and VMs' status, and is refused another host's; of a
  MigrationJob labelled with its node it writes only its own part of the status.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, CoordinationV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from harness import REPO, eventually
from kubevisor.api.wire import (
    MIGRATION_SOURCE_LABEL,
    MIGRATION_SOURCE_MANAGER,
    MIGRATION_TARGET_LABEL,
    MIGRATION_TARGET_MANAGER,
)
from kubevisor.kube.client import Kube
from kubevisor.testbed import controlplane
from kubevisor.testbed.controlplane import ControlPlane

pytestmark = pytest.mark.apiserver

MANIFESTS = REPO / "deploy" / "manifests"
SYSTEM = "kubevisor-system"
AGENT = f"system:serviceaccount:{SYSTEM}:kubevisor-agent"
CONTROLLER = f"system:serviceaccount:{SYSTEM}:kubevisor-controller"
SA_GROUPS = ["system:serviceaccounts", f"system:serviceaccounts:{SYSTEM}", "system:authenticated"]
POLICY = "kubevisor-agent-own-host"
GROUP, VERSION = "kubevisor.io", "v1alpha1"
MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"
APPLIED = ("namespace.yaml", "controller-rbac.yaml", "agent-rbac.yaml")
POLICY_FILES = ("agent-admission-policy.yaml", "controller-admission-policy.yaml")
CONTROLLER_POLICY = "kubevisor-controller-host-finalizers-only"


@dataclass(frozen=True)
class World:
    plane: ControlPlane
    namespace: str
    hosts: tuple[str, str]
    """Node = HypervisorHost = Lease names of agent a and agent b."""
    agent_cert: Path
    controller_cert: Path
    agent_tokens: tuple[Path, Path]

    def job(self, source: int) -> str:
        """The MigrationJob from host `source` (0: a -> b; 1: b -> a host with no agent)."""
        return f"mig-from-{self.hosts[source]}"


def token_kubeconfig(plane: ControlPlane, token: str, name: str) -> Path:
    """The admin kubeconfig's cluster with a bearer token as the user."""
    config = yaml.safe_load(plane.kubeconfig.read_text())
    config["users"] = [{"name": name, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = name
    path = plane.state_dir / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def apply(plane: ControlPlane, obj: dict[str, object], kubeconfig: Path | None = None) -> None:
    plane.kubectl("create", "-f", "-", input=json.dumps(obj), kubeconfig=kubeconfig)


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane) -> Iterator[World]:
    plane = control_plane
    suffix = uuid.uuid4().hex[:6]
    namespace = f"rbac-{suffix}"
    hosts = (f"rbac-hv-a-{suffix}", f"rbac-hv-b-{suffix}")
    plane.kubectl("create", "namespace", SYSTEM, check=False)
    plane.kubectl("create", "namespace", namespace)
    controlplane.install_crds(plane, [MANIFESTS / "crds" / "kopf-peering.yaml"])
    for name in APPLIED:
        plane.kubectl("apply", "--server-side", "-f", str(MANIFESTS / name))
    try:
        for policy in POLICY_FILES:
            plane.kubectl("apply", "--server-side", "-f", str(MANIFESTS / policy))
        tokens = []
        for host in hosts:
            apply(plane, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": host}})
            apply(
                plane,
                {
                    "apiVersion": "kubevisor.io/v1alpha1",
                    "kind": "HypervisorHost",
                    "metadata": {"name": host},
                    "spec": {},
                },
            )
            apply(
                plane,
                {
                    "apiVersion": "kubevisor.io/v1alpha1",
                    "kind": "VirtualMachine",
                    "metadata": {
                        "name": f"vm-on-{host}",
                        "namespace": namespace,
                        "labels": {"kubevisor.io/host": host},
                    },
                    "spec": {"memory": {"size": "64Mi"}},
                },
            )
            pod = f"agent-{host}"
            apply(
                plane,
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": pod, "namespace": SYSTEM},
                    "spec": {
                        "serviceAccountName": "kubevisor-agent",
                        "nodeName": host,
                        "containers": [{"name": "agent", "image": "kubevisor-agent:test"}],
                    },
                },
            )
            token = plane.kubectl(
                "create",
                "token",
                "kubevisor-agent",
                "-n",
                SYSTEM,
                "--bound-object-kind=Pod",
                f"--bound-object-name={pod}",
                "--duration=30m",
            ).stdout.strip()
            tokens.append(token_kubeconfig(plane, token, f"agent-token-{host}"))
        # Two admitted jobs as the controller leaves them: labelled with both hosts, phase
        # and hosts in the status (the controller's fields, which agents must not touch).
        for source, target in ((hosts[0], hosts[1]), (hosts[1], f"rbac-hv-x-{suffix}")):
            job = f"mig-from-{source}"
            apply(
                plane,
                {
                    "apiVersion": "kubevisor.io/v1alpha1",
                    "kind": "MigrationJob",
                    "metadata": {
                        "name": job,
                        "namespace": namespace,
                        "labels": {MIGRATION_SOURCE_LABEL: source, MIGRATION_TARGET_LABEL: target},
                    },
                    "spec": {"vm": f"vm-on-{source}"},
                },
            )
            plane.kubectl(
                "patch",
                "migrationjob",
                job,
                "-n",
                namespace,
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps({"status": {"phase": "Running", "source": source, "target": target}}),
            )
        yield World(
            plane=plane,
            namespace=namespace,
            hosts=hosts,
            agent_cert=plane.credentials(AGENT, groups=SA_GROUPS),
            controller_cert=plane.credentials(CONTROLLER, groups=SA_GROUPS),
            agent_tokens=(tokens[0], tokens[1]),
        )
    finally:
        # The policy would refuse later tests' agents that use certificates: remove it.
        for policy in POLICY_FILES:
            plane.kubectl("delete", "-f", str(MANIFESTS / policy), check=False)
        for host in hosts:
            plane.kubectl(
                "delete", "pod", f"agent-{host}", "-n", SYSTEM, "--wait=false", check=False
            )
            plane.kubectl("delete", "lease", host, "-n", SYSTEM, check=False)
            plane.kubectl("delete", "hvh,node", host, check=False)
        plane.kubectl("delete", "vm,migrationjob", "--all", "-n", namespace, check=False)
        plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def policy_in_force(world: World) -> World:
    """The admission policy is enforced (the apiserver loads it asynchronously)."""

    def refused() -> bool:
        reply = host_status_patch(world.hosts[0], kubeconfig=world.agent_cert)
        return reply.status == 403 and POLICY in reply.message

    eventually(refused, timeout=30, what=f"{POLICY} to be enforced")
    return world


@dataclass(frozen=True)
class Reply:
    status: int
    message: str


def call(kubeconfig: Path, request: Callable[[ApiClient], object]) -> Reply:
    """One API call with `kubeconfig`, as the agent makes it: a PATCH or POST and nothing
    else (kubectl patch would GET first, which the agent may not)."""
    api = kube_config.new_client_from_config(config_file=str(kubeconfig))
    try:
        request(api)
        return Reply(200, "")
    except ApiException as error:
        return Reply(error.status, json.loads(error.body).get("message", error.body))
    finally:
        api.close()


def host_status_patch(host: str, *, kubeconfig: Path) -> Reply:
    return call(
        kubeconfig,
        lambda api: CustomObjectsApi(api).patch_cluster_custom_object_status(
            GROUP, VERSION, "hypervisorhosts", host, {"status": {"vmCount": 0}}, _content_type=MERGE
        ),
    )


# -- what RBAC allows: kubectl auth can-i with each component's own credential ----------------

AGENT_CAN = [
    pytest.param("list", "virtualmachines.kubevisor.io", "", "-A", True, id="list-vms"),
    pytest.param("watch", "virtualmachines.kubevisor.io", "", "-A", True, id="watch-vms"),
    pytest.param(
        "patch", "virtualmachines.kubevisor.io", "status", "-A", True, id="patch-vm-status"
    ),
    pytest.param("get", "hypervisorhosts.kubevisor.io", "", "", True, id="get-host"),
    pytest.param("create", "hypervisorhosts.kubevisor.io", "", "", True, id="create-host"),
    pytest.param(
        "patch", "hypervisorhosts.kubevisor.io", "status", "", True, id="patch-host-status"
    ),
    pytest.param("create", "leases.coordination.k8s.io", "", SYSTEM, True, id="create-lease"),
    pytest.param("patch", "leases.coordination.k8s.io", "", SYSTEM, True, id="patch-lease"),
    pytest.param("create", "events", "", "-A", True, id="create-events"),
    pytest.param("get", "virtualmachines.kubevisor.io", "", "-A", True, id="get-vm"),
    pytest.param("list", "migrationjobs.kubevisor.io", "", "-A", True, id="list-migjobs"),
    pytest.param("watch", "migrationjobs.kubevisor.io", "", "-A", True, id="watch-migjobs"),
    pytest.param(
        "patch", "migrationjobs.kubevisor.io", "status", "-A", True, id="patch-migjob-status"
    ),
    pytest.param("delete", "virtualmachines.kubevisor.io", "", "-A", False, id="no-delete-vm"),
    pytest.param("patch", "virtualmachines.kubevisor.io", "", "-A", False, id="no-patch-vm-spec"),
    pytest.param("update", "virtualmachines.kubevisor.io", "", "-A", False, id="no-update-vm"),
    pytest.param("create", "virtualmachines.kubevisor.io", "", "-A", False, id="no-create-vm"),
    pytest.param(
        "update", "virtualmachines.kubevisor.io", "status", "-A", False, id="no-update-vm-status"
    ),
    pytest.param("patch", "hypervisorhosts.kubevisor.io", "", "", False, id="no-patch-host-spec"),
    pytest.param("delete", "hypervisorhosts.kubevisor.io", "", "", False, id="no-delete-host"),
    pytest.param("list", "hypervisorhosts.kubevisor.io", "", "", True, id="list-hosts"),
    pytest.param("watch", "hypervisorhosts.kubevisor.io", "", "", True, id="watch-hosts"),
    pytest.param("delete", "leases.coordination.k8s.io", "", SYSTEM, False, id="no-delete-lease"),
    pytest.param("get", "leases.coordination.k8s.io", "", SYSTEM, False, id="no-read-leases"),
    pytest.param("patch", "leases.coordination.k8s.io", "", "default", False, id="no-lease-else"),
    pytest.param("create", "migrationjobs.kubevisor.io", "", "-A", False, id="no-create-migjob"),
    pytest.param("delete", "migrationjobs.kubevisor.io", "", "-A", False, id="no-delete-migjob"),
    pytest.param(
        "deletecollection", "migrationjobs.kubevisor.io", "", "-A", False, id="no-delete-migjobs"
    ),
    pytest.param("patch", "migrationjobs.kubevisor.io", "", "-A", False, id="no-patch-migjob"),
    pytest.param("update", "migrationjobs.kubevisor.io", "", "-A", False, id="no-update-migjob"),
    pytest.param(
        "update", "migrationjobs.kubevisor.io", "status", "-A", False, id="no-update-migjob-status"
    ),
    pytest.param("get", "migrationjobs.kubevisor.io", "", "-A", False, id="no-get-migjob"),
    pytest.param("watch", "virtualmachinesnapshots.kubevisor.io", "", "-A", True, id="watch-snaps"),
    pytest.param(
        "patch", "virtualmachinesnapshots.kubevisor.io", "status", "-A", True, id="snap-status"
    ),
    pytest.param(
        "patch", "virtualmachinesnapshots.kubevisor.io", "", "-A", False, id="no-patch-snap"
    ),
    pytest.param(
        "delete", "virtualmachinesnapshots.kubevisor.io", "", "-A", False, id="no-delete-snap"
    ),
    pytest.param("get", "secrets", "", SYSTEM, False, id="no-secrets"),
    pytest.param("create", "pods", "", SYSTEM, False, id="no-pods"),
    pytest.param("watch", "networks.kubevisor.io", "", "-A", True, id="watch-networks"),
    pytest.param("get", "networks.kubevisor.io", "", "-A", True, id="get-network"),
    pytest.param("patch", "networks.kubevisor.io", "", "-A", False, id="no-patch-network"),
    pytest.param("patch", "networks.kubevisor.io", "status", "-A", False, id="no-network-status"),
]

CONTROLLER_CAN = [
    pytest.param("watch", "virtualmachines.kubevisor.io", "", "-A", True, id="watch-vms"),
    pytest.param("patch", "virtualmachines.kubevisor.io", "", "-A", True, id="bind-vms"),
    pytest.param("patch", "virtualmachines.kubevisor.io", "status", "-A", True, id="vm-status"),
    pytest.param("watch", "hypervisorhosts.kubevisor.io", "", "", True, id="watch-hosts"),
    pytest.param("patch", "hypervisorhosts.kubevisor.io", "status", "", True, id="host-status"),
    pytest.param("get", "migrationjobs.kubevisor.io", "", "-A", True, id="get-migjobs"),
    pytest.param("list", "migrationjobs.kubevisor.io", "", "-A", True, id="list-migjobs"),
    pytest.param("watch", "migrationjobs.kubevisor.io", "", "-A", True, id="watch-migjobs"),
    pytest.param("patch", "migrationjobs.kubevisor.io", "", "-A", True, id="migjob-labels"),
    pytest.param("patch", "migrationjobs.kubevisor.io", "status", "-A", True, id="mig-status"),
    pytest.param("watch", "leases.coordination.k8s.io", "", SYSTEM, True, id="read-heartbeats"),
    pytest.param("patch", "clusterkopfpeerings.kopf.dev", "", "", True, id="kopf-peering"),
    pytest.param("patch", "kopfpeerings.kopf.dev", "", SYSTEM, True, id="kopf-ns-peering"),
    pytest.param("watch", "customresourcedefinitions", "", "", True, id="kopf-crd-discovery"),
    pytest.param("watch", "namespaces", "", "", True, id="kopf-namespaces"),
    pytest.param("create", "events", "", "-A", True, id="events"),
    pytest.param("patch", "events", "", "-A", True, id="kopf-event-counts"),
    pytest.param("delete", "virtualmachines.kubevisor.io", "", "-A", False, id="no-delete-vm"),
    pytest.param("create", "virtualmachines.kubevisor.io", "", "-A", False, id="no-create-vm"),
    pytest.param("create", "migrationjobs.kubevisor.io", "", "-A", True, id="drain-migjobs"),
    pytest.param("delete", "migrationjobs.kubevisor.io", "", "-A", False, id="no-delete-migjob"),
    # kopf's finalizer for the per-host timer; controller-admission-policy.yaml refuses the
    # rest (test_controller_changes_only_host_finalizers).
    pytest.param("patch", "hypervisorhosts.kubevisor.io", "", "", True, id="host-finalizers"),
    pytest.param("delete", "hypervisorhosts.kubevisor.io", "", "", False, id="no-delete-host"),
    pytest.param("patch", "leases.coordination.k8s.io", "", SYSTEM, False, id="no-write-lease"),
    pytest.param("watch", "leases.coordination.k8s.io", "", "default", False, id="no-lease-else"),
    pytest.param("patch", "customresourcedefinitions", "", "", False, id="no-crd-writes"),
    pytest.param("get", "secrets", "", SYSTEM, True, id="read-bmc-credentials"),
    pytest.param("list", "secrets", "", SYSTEM, False, id="no-listing-secrets"),
    pytest.param("watch", "secrets", "", SYSTEM, False, id="no-watching-secrets"),
    pytest.param("get", "secrets", "", "default", False, id="no-secrets-elsewhere"),
    pytest.param("watch", "networks.kubevisor.io", "", "-A", True, id="watch-networks"),
    pytest.param("patch", "networks.kubevisor.io", "", "-A", True, id="network-finalizer"),
    pytest.param("patch", "networks.kubevisor.io", "status", "-A", True, id="network-status"),
    pytest.param("create", "networks.kubevisor.io", "", "-A", False, id="no-create-network"),
    pytest.param("delete", "networks.kubevisor.io", "", "-A", False, id="no-delete-network"),
    pytest.param(
        "create", "networks.kubevisor.io", "provider", "-A", False, id="no-provider-networks"
    ),
    pytest.param(
        "watch", "virtualmachineclusterflavors.kubevisor.io", "", "", True, id="watch-cflavors"
    ),
    pytest.param("list", "virtualmachineflavors.kubevisor.io", "", "-A", True, id="list-flavors"),
    pytest.param(
        "patch", "virtualmachineflavors.kubevisor.io", "", "-A", False, id="no-flavor-writes"
    ),
    pytest.param("watch", "services", "", "-A", True, id="watch-services"),
    pytest.param("patch", "services", "", "-A", False, id="no-service-writes"),
    pytest.param("patch", "endpointslices.discovery.k8s.io", "", "-A", True, id="apply-slices"),
    pytest.param("delete", "endpointslices.discovery.k8s.io", "", "-A", True, id="delete-slices"),
    pytest.param("list", "endpointslices.discovery.k8s.io", "", "-A", True, id="sweep-slices"),
    pytest.param("watch", "endpointslices.discovery.k8s.io", "", "-A", False, id="no-slice-watch"),
    pytest.param("patch", "pods", "", "-A", False, id="no-pods"),
    pytest.param("watch", "resourcequotas", "", "-A", True, id="watch-quotas"),
    pytest.param("patch", "resourcequotas", "status", "-A", True, id="quota-status"),
    pytest.param("patch", "resourcequotas", "", "-A", False, id="no-quota-spec"),
    pytest.param("delete", "resourcequotas", "", "-A", False, id="no-delete-quota"),
]


def can_i(world: World, kubeconfig: Path, verb: str, resource: str, sub: str, where: str) -> bool:
    args = ["auth", "can-i", verb, resource]
    if sub:
        args.append(f"--subresource={sub}")
    if where == "-A":
        args.append("--all-namespaces")
    elif where:
        args += ["-n", where]
    done = world.plane.kubectl(*args, kubeconfig=kubeconfig, check=False)
    answer = done.stdout.strip()
    assert answer in ("yes", "no"), done.stderr
    return answer == "yes"


@pytest.mark.parametrize(("verb", "resource", "sub", "where", "allowed"), AGENT_CAN)
def test_agent_can_i(
    world: World, verb: str, resource: str, sub: str, where: str, allowed: bool
) -> None:
    assert can_i(world, world.agent_cert, verb, resource, sub, where) is allowed


@pytest.mark.parametrize(("verb", "resource", "sub", "where", "allowed"), CONTROLLER_CAN)
def test_controller_can_i(
    world: World, verb: str, resource: str, sub: str, where: str, allowed: bool
) -> None:
    assert can_i(world, world.controller_cert, verb, resource, sub, where) is allowed


def test_a_bound_token_is_the_same_rbac_subject_as_the_certificate(world: World) -> None:
    """Both credentials are user system:serviceaccount:kubevisor-system:kubevisor-agent; the
    token also names its node, which is what the admission policy reads."""
    review = json.loads(
        world.plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=world.agent_tokens[0]).stdout
    )
    user = review["status"]["userInfo"]
    assert user["username"] == AGENT
    assert user["extra"]["authentication.kubernetes.io/node-name"] == [world.hosts[0]]


# -- real calls ----------------------------------------------------------------------------


def test_agent_cannot_delete_a_vm(world: World) -> None:
    vm = f"vm-on-{world.hosts[0]}"
    done = world.plane.kubectl(
        "delete", "vm", vm, "-n", world.namespace, kubeconfig=world.agent_cert, check=False
    )
    assert done.returncode != 0
    assert "forbidden" in done.stderr and "cannot delete resource" in done.stderr
    world.plane.kubectl("get", "vm", vm, "-n", world.namespace)  # still there


def test_agent_cannot_patch_a_vm_spec(world: World) -> None:
    reply = call(
        world.agent_cert,
        lambda api: CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            world.namespace,
            "virtualmachines",
            f"vm-on-{world.hosts[0]}",
            {"spec": {"runStrategy": "Halted"}},
            _content_type=MERGE,
        ),
    )
    assert reply.status == 403 and "cannot patch resource" in reply.message


def lease(name: str) -> dict[str, object]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": SYSTEM},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40},
    }


@pytest.mark.parametrize(
    ("agent", "target", "allowed"),
    [
        pytest.param(0, 0, True, id="own-host"),
        pytest.param(0, 1, False, id="other-host"),
        pytest.param(1, 1, True, id="other-agent-own-host"),
    ],
)
@pytest.mark.parametrize(
    "write",
    ["host-status", "vm-status", "lease-create", "lease-renew", "host-create"],
)
def test_agent_writes_only_its_own_host(
    policy_in_force: World, write: str, agent: int, target: int, allowed: bool
) -> None:
    world = policy_in_force
    plane, me, host = world.plane, world.agent_tokens[agent], world.hosts[target]
    if write == "lease-renew":
        apply(plane, lease(host))  # the admin creates it
    if write == "host-status":
        reply = host_status_patch(host, kubeconfig=me)
    elif write == "vm-status":
        reply = call(
            me,
            lambda api: CustomObjectsApi(api).patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                world.namespace,
                "virtualmachines",
                f"vm-on-{host}",
                {"status": {"phase": "Pending"}},
                _content_type=MERGE,
            ),
        )
    elif write == "lease-create":
        reply = call(
            me, lambda api: CoordinationV1Api(api).create_namespaced_lease(SYSTEM, lease(host))
        )
    elif write == "lease-renew":
        reply = call(
            me,
            lambda api: CoordinationV1Api(api).patch_namespaced_lease(
                host, SYSTEM, {"spec": {"leaseDurationSeconds": 41}}, _content_type=MERGE
            ),
        )
    else:  # host-create: the host exists, so passing admission ends in AlreadyExists (409)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "HypervisorHost",
            "metadata": {"name": host},
        }
        reply = call(
            me,
            lambda api: CustomObjectsApi(api).create_cluster_custom_object(
                GROUP, VERSION, "hypervisorhosts", body
            ),
        )
    plane.kubectl("delete", "lease", host, "-n", SYSTEM, "--ignore-not-found")
    if not allowed:
        assert reply.status == 403, reply
        assert f"ValidatingAdmissionPolicy '{POLICY}'" in reply.message, reply
    elif write == "host-create":
        assert reply.status == 409, reply
    else:
        assert reply.status == 200, reply


def test_a_credential_without_a_node_is_refused_every_host_write(policy_in_force: World) -> None:
    """The limit of the policy, stated: the client certificate passes RBAC but names no
    node, so it may write no host at all (only pod-bound tokens can)."""
    reply = host_status_patch(policy_in_force.hosts[0], kubeconfig=policy_in_force.agent_cert)
    assert reply.status == 403 and "names none" in reply.message


# -- live migration ------------------------------------------------------------------------


def job_status_write(
    world: World, kubeconfig: Path, job: str, status: dict[str, object], *, manager: str
) -> Reply:
    """A server-side apply of MigrationJob status, the call the agents make (Report._apply,
    Migrator._prepare), under field manager `manager`."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MigrationJob",
        "metadata": {"name": job, "namespace": world.namespace},
        "status": status,
    }
    return call(
        kubeconfig,
        lambda api: CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            world.namespace,
            "migrationjobs",
            job,
            body,
            field_manager=manager,
            force=True,
            _content_type=APPLY,
        ),
    )


ROGUE = "kubevisor-agent-rogue"
TRANSFER = {"transfer": {"state": "Running"}, "progress": {"percent": 40, "dataRemaining": 6}}
PREPARED = {"targetAgent": {"ready": True, "libvirtURI": "qemu+tls://b/system", "vmUID": "u"}}
# What a misbehaving agent writes: different from the above, so never a no-op.
FORGED_TRANSFER = {"transfer": {"state": "Failed", "message": "forged"}}
FORGED_TARGET = {"targetAgent": {"ready": False, "message": "forged"}}


@pytest.mark.parametrize(
    ("agent", "source", "status", "manager", "refusal"),
    [
        pytest.param(0, 0, TRANSFER, MIGRATION_SOURCE_MANAGER, None, id="source-reports-progress"),
        pytest.param(
            1, 0, PREPARED, MIGRATION_TARGET_MANAGER, None, id="target-publishes-preparation"
        ),
        pytest.param(1, 1, TRANSFER, MIGRATION_SOURCE_MANAGER, None, id="other-agent-own-job"),
        pytest.param(
            0,
            0,
            FORGED_TARGET,
            ROGUE,
            "may write only status.transfer, status.progress",
            id="source-cannot-write-the-targets-part",
        ),
        pytest.param(
            1,
            0,
            FORGED_TRANSFER,
            ROGUE,
            "may write only status.targetAgent",
            id="target-cannot-write-the-transfer",
        ),
        pytest.param(
            0,
            0,
            {"phase": "Succeeded"},
            ROGUE,
            "may write only status.transfer",
            id="source-cannot-write-the-phase",
        ),
        pytest.param(
            1,
            0,
            {"target": "elsewhere"},
            ROGUE,
            "may write only status.targetAgent",
            id="target-cannot-move-the-job",
        ),
        pytest.param(
            0,
            1,
            FORGED_TRANSFER,
            ROGUE,
            "MigrationJobs from or to its node",
            id="no-job-of-other-hosts",
        ),
    ],
)
def test_agent_writes_only_its_part_of_a_migration(
    policy_in_force: World,
    agent: int,
    source: int,
    status: dict[str, object],
    manager: str,
    refusal: str | None,
) -> None:
    world = policy_in_force
    job = world.job(source)
    reply = job_status_write(world, world.agent_tokens[agent], job, status, manager=manager)
    stored = json.loads(
        world.plane.kubectl("get", "migrationjob", job, "-n", world.namespace, "-o", "json").stdout
    )["status"]
    if refusal is None:
        assert reply.status == 200, reply
        assert {key: stored[key] for key in status} == status
    else:
        assert reply.status == 403, reply
        assert f"ValidatingAdmissionPolicy '{POLICY}'" in reply.message, reply
        assert refusal in reply.message, reply
    # The controller's fields are as it left them, whatever the agents tried.
    assert stored["phase"] == "Running"
    assert stored["source"] == world.hosts[source]


def test_agent_cannot_remove_the_controllers_fields(policy_in_force: World) -> None:
    """A merge patch dropping the phase, on a job from the agent's own host."""
    world = policy_in_force
    reply = call(
        world.agent_tokens[0],
        lambda api: CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            world.namespace,
            "migrationjobs",
            world.job(0),
            {"status": {"phase": None}},
            _content_type=MERGE,
        ),
    )
    assert reply.status == 403 and "may write only status.transfer" in reply.message, reply


def vm_status_patch(world: World, agent: int, vm: str) -> Reply:
    return call(
        world.agent_tokens[agent],
        lambda api: CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            world.namespace,
            "virtualmachines",
            vm,
            {"status": {"phase": "Migrating"}},
            _content_type=MERGE,
        ),
    )


def test_vm_status_passes_from_source_to_target_with_the_host_label(
    policy_in_force: World,
) -> None:
    """The hand-off of a migration: the source writes the VM's status while the label is
    its host, the target only once the controller has moved the label."""
    world = policy_in_force
    vm = f"moving-{uuid.uuid4().hex[:6]}"
    apply(
        world.plane,
        {
            "apiVersion": "kubevisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {
                "name": vm,
                "namespace": world.namespace,
                "labels": {"kubevisor.io/host": world.hosts[0]},
            },
            "spec": {"memory": {"size": "64Mi"}},
        },
    )
    assert vm_status_patch(world, 0, vm).status == 200
    assert vm_status_patch(world, 1, vm).status == 403
    world.plane.kubectl(
        "label",
        "vm",
        vm,
        "-n",
        world.namespace,
        f"kubevisor.io/host={world.hosts[1]}",
        "--overwrite",
    )
    assert vm_status_patch(world, 1, vm).status == 200
    before = vm_status_patch(world, 0, vm)
    assert before.status == 403 and "bound to its node" in before.message, before


def test_agent_reads_what_a_migration_needs(world: World) -> None:
    """The agent's own client with its own token: its jobs by label across namespaces, and a
    VM by name that is not bound to it yet (the target prepares before the label moves)."""

    async def reads() -> tuple[list[str], str | None]:
        kube = await Kube.connect(world.agent_tokens[1])
        try:
            jobs, _ = await kube.list_jobs(
                label_selector=f"{MIGRATION_TARGET_LABEL}={world.hosts[1]}"
            )
            vm = await kube.get_vm(world.namespace, f"vm-on-{world.hosts[0]}")
        finally:
            await kube.close()
        return [job["metadata"]["name"] for job in jobs], vm and vm["metadata"]["name"]

    jobs, vm = asyncio.run(reads())
    assert jobs == [world.job(0)]
    assert vm == f"vm-on-{world.hosts[0]}"


def host_patch(host: str, patch: dict[str, object], *, kubeconfig: Path) -> Reply:
    return call(
        kubeconfig,
        lambda api: CustomObjectsApi(api).patch_cluster_custom_object(
            GROUP, VERSION, "hypervisorhosts", host, patch, _content_type=MERGE
        ),
    )


def test_controller_changes_only_host_finalizers(world: World) -> None:
    host = world.hosts[1]

    def spec_refused() -> Reply | None:
        reply = host_patch(
            host, {"spec": {"unschedulable": True}}, kubeconfig=world.controller_cert
        )
        return reply if reply.status == 403 and CONTROLLER_POLICY in reply.message else None

    refused = eventually(spec_refused, timeout=30, what=f"{CONTROLLER_POLICY} to be enforced")
    assert "only the finalizers" in refused.message
    labelled = host_patch(
        host, {"metadata": {"labels": {"x": "y"}}}, kubeconfig=world.controller_cert
    )
    assert labelled.status == 403, labelled
    kopf_finalizer = {"metadata": {"finalizers": ["kopf.zalando.org/KopfFinalizerMarker"]}}
    assert host_patch(host, kopf_finalizer, kubeconfig=world.controller_cert).status == 200
    assert (
        host_patch(
            host, {"metadata": {"finalizers": None}}, kubeconfig=world.controller_cert
        ).status
        == 200
    )
