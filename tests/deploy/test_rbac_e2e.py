"""The e2e happy path with least privilege: the controller and an agent run with credentials
bound to exactly their ServiceAccounts, on a control plane of their own with the whole of
deploy/manifests applied (RBAC, the agent admission policy, the ClusterKopfPeering).

- the controller: a ServiceAccount token of `kubevisor-controller`, peering as the
  Deployment does (`--peering=kubevisor`);
- the agent: a token of `kubevisor-agent` bound to a Pod on the Node named after its host,
  as the DaemonSet's pods get it (the node name in the token is what the admission policy
  compares).

A VM is placed, started, reported Running and Ready, then deleted by the admin and its
finalizer released; with the agent's credential a VM cannot be deleted nor another host's
status written; and neither process's log shows a refused call (a missing permission
would show there).

A control plane of its own, not the session's: there the e2e stack's controller may
already run, and two controllers would both place; and its agents use the admin
credential, which the admission policy does not concern.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import config as kube_config
from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from harness import REPO, ManagedProcess, controlplane_bin, eventually, require
from kubevisor.testbed import controlplane, hosts
from kubevisor.testbed.commands import LOCAL_MIGRATE_URI, AgentOptions, ControllerOptions
from kubevisor.testbed.controlplane import ControlPlane, free_ports
from kubevisor.testbed.guest import Guest
from kubevisor.testbed.hosts import LocalHost

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.apiserver,
    pytest.mark.libvirtd,
]

T = TypeVar("T")

MANIFESTS = REPO / "deploy" / "manifests"
EXAMPLE = REPO / "deploy" / "examples" / "01-minimal-vm.yaml"
SYSTEM = "kubevisor-system"
AGENT = f"system:serviceaccount:{SYSTEM}:kubevisor-agent"
CONTROLLER = f"system:serviceaccount:{SYSTEM}:kubevisor-controller"
POLICY = "kubevisor-agent-own-host"
NAMESPACE = "rbac-e2e"
MARKER = "KUBEVISOR-GUEST-READY"
HOST_INDEX = 7
"""Numbered well after the shared hosts and the e2e ExtraHost (3); the host's name only has
to be unique in this module's own control plane, its ports are free ones."""
OTHER_HOST = "kubevisor-host-elsewhere"
"""A HypervisorHost with no agent, whose status the agent must not write."""
FORGED_COUNT = 97
"""The VM count the agent tries to give that host."""
REFUSAL = re.compile(r"forbidden|(?<![\w,.:-])403(?!\w)", re.IGNORECASE)
"""A refused API call in a log line: kubernetes' reason Forbidden, kopf's
APIForbiddenError, or the bare status code (not a log timestamp's milliseconds)."""


@dataclass(frozen=True)
class Cluster:
    plane: ControlPlane
    host: LocalHost
    agent_state: Path
    controller_kubeconfig: Path
    agent_kubeconfig: Path
    controller: ManagedProcess
    agent: ManagedProcess

    def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        args = ["get", kind, name, "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        done = self.plane.kubectl(*args, check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def domains(self) -> list[str]:
        """UUIDs of every domain, running or not, on the host."""
        done = subprocess.run(
            ["virsh", "-c", self.host.uri, "list", "--all", "--uuid"],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.split()

    def refusals(self) -> list[str]:
        """Log lines of the controller and the agent that report a refused call."""
        return [
            f"{process.log.name}: {line}"
            for process in (self.controller, self.agent)
            if process.log.exists()
            for line in process.log.read_text(errors="replace").splitlines()
            if REFUSAL.search(line)
        ]

    def wait(self, check: Callable[[], T | None], *, timeout: float, what: str) -> T:
        """`eventually(check)`, failing at once when either process logs a refused call: a
        missing permission would otherwise show only as a timeout."""

        def unrefused() -> T | None:
            if refusals := self.refusals():
                pytest.fail(
                    f"waiting for {what}, a call was refused:\n" + "\n".join(refusals[:10]),
                    pytrace=False,
                )
            return check()

        return eventually(unrefused, timeout=timeout, what=what)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((dict(c) for c in conditions if c["type"] == type_), {})


def host_ready(cluster: Cluster) -> bool:
    return condition(cluster.get("hvh", cluster.host.name) or {}, "Ready").get("status") == "True"


def token_kubeconfig(plane: ControlPlane, token: str, name: str) -> Path:
    """The admin kubeconfig's cluster with a bearer token as the user."""
    config = yaml.safe_load(plane.kubeconfig.read_text())
    config["users"] = [{"name": name, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = name
    path = plane.state_dir / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def create(plane: ControlPlane, obj: dict[str, Any]) -> None:
    plane.kubectl("create", "-f", "-", input=json.dumps(obj))


def agent_token(plane: ControlPlane, node: str) -> str:
    """The token the kubelet would give the agent's pod on `node`: bound to the Pod, so it
    names the node."""
    create(plane, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    pod = f"kubevisor-agent-{node}"
    create(
        plane,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod, "namespace": SYSTEM},
            "spec": {
                "serviceAccountName": "kubevisor-agent",
                "nodeName": node,
                "containers": [{"name": "agent", "image": "kubevisor-agent:test"}],
            },
        },
    )
    return str(
        plane.kubectl(
            "create",
            "token",
            "kubevisor-agent",
            "-n",
            SYSTEM,
            "--bound-object-kind=Pod",
            f"--bound-object-name={pod}",
            "--duration=2h",
        ).stdout.strip()
    )


def agent_argv(host: LocalHost, guest: Guest, *, kubeconfig: Path, state: Path) -> list[str]:
    """The e2e stack's agent command line (tests/e2e/conftest.py), with its own credential."""
    return AgentOptions(
        host.name,
        host.uri,
        kubeconfig,
        state,
        domain_type="qemu",
        guest=guest,
        shutdown_grace=15,
        lease_duration=8,
        metrics_port=free_ports(1)[0],
        migrate_uri=LOCAL_MIGRATE_URI,
        cgroup_controllers="",
    ).argv()


def show_log(process: ManagedProcess) -> None:
    sys.stderr.write(f"\n--- {process.log.name} (tail) ---\n{process.tail()}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_guest: Guest) -> Iterator[Cluster]:
    bin_dir = controlplane_bin()
    require(
        bin_dir is not None,
        what="the local kube-apiserver + etcd",
        how="build them with hack/controlplane/build.sh (or run `make test`)",
    )
    assert bin_dir is not None
    missing = hosts.missing_prerequisites()
    require(
        not missing, what=f"local libvirtd hosts ({', '.join(missing)})", how=hosts.HOW_TO_INSTALL
    )
    root = tmp_path_factory.mktemp("rbac-e2e")
    with contextlib.ExitStack() as cleanup:
        crds = [p for p in (MANIFESTS / "crds").glob("*.yaml") if p.name != "kustomization.yaml"]
        plane = controlplane.start(bin_dir=bin_dir, state_dir=root / "controlplane", crd_paths=crds)
        cleanup.callback(controlplane.stop, plane.state_dir)
        # Everything the Kustomize base ships; its Deployment and DaemonSet stay inert (no
        # controller-manager here), the processes below play their pods.
        plane.kubectl("apply", "--server-side", "-k", str(MANIFESTS))
        plane.kubectl("create", "namespace", NAMESPACE)
        host = hosts.start_hosts(1, state_dir=root / "hosts", first_index=HOST_INDEX)[0]
        cleanup.callback(hosts.stop_hosts, root / "hosts")

        controller_token = plane.kubectl(
            "create", "token", "kubevisor-controller", "-n", SYSTEM, "--duration=2h"
        ).stdout.strip()
        controller_kubeconfig = token_kubeconfig(plane, controller_token, "controller")
        agent_kubeconfig = token_kubeconfig(plane, agent_token(plane, host.name), "agent")
        for kubeconfig, user in ((controller_kubeconfig, CONTROLLER), (agent_kubeconfig, AGENT)):
            whoami = plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig)
            assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == user

        # The policy is loaded asynchronously: until it refuses the agent another host, a
        # happy path would prove nothing about it.
        create(
            plane,
            {
                "apiVersion": "kubevisor.io/v1alpha1",
                "kind": "HypervisorHost",
                "metadata": {"name": OTHER_HOST},
                "spec": {},
            },
        )
        eventually(
            lambda: POLICY in other_host_status_patch(agent_kubeconfig).message,
            timeout=30,
            what=f"{POLICY} to be enforced",
        )

        controller = ManagedProcess(
            ControllerOptions(
                controller_kubeconfig,
                # As the Deployment runs it (one replica here).
                standalone=False,
                peering="kubevisor",
                metrics_port=free_ports(1)[0],
            ).argv(),
            log=root / "controller.log",
        )
        agent_state = root / "agent"
        agent_state.mkdir()
        agent = ManagedProcess(
            agent_argv(host, tiny_guest, kubeconfig=agent_kubeconfig, state=agent_state),
            log=agent_state / "agent.log",
        )
        for process in (controller, agent):
            cleanup.callback(show_log, process)
            cleanup.callback(process.stop)
            process.start()
        started = Cluster(
            plane=plane,
            host=host,
            agent_state=agent_state,
            controller_kubeconfig=controller_kubeconfig,
            agent_kubeconfig=agent_kubeconfig,
            controller=controller,
            agent=agent,
        )
        started.wait(lambda: host_ready(started), timeout=90, what=f"host {host.name} Ready")
        yield started


@dataclass(frozen=True)
class Reply:
    status: int
    message: str


def other_host_status_patch(kubeconfig: Path) -> Reply:
    """A merge patch of another host's status, alone, as the agent makes its own (kubectl
    patch would GET the status first, which the agent may not)."""
    api = kube_config.new_client_from_config(config_file=str(kubeconfig))
    try:
        CustomObjectsApi(api).patch_cluster_custom_object_status(
            "kubevisor.io",
            "v1alpha1",
            "hypervisorhosts",
            OTHER_HOST,
            {"status": {"vmCount": FORGED_COUNT}},
            _content_type="application/merge-patch+json",
        )
        return Reply(200, "")
    except ApiException as error:
        return Reply(error.status, json.loads(error.body or "{}").get("message", error.body))
    finally:
        api.close()


def apply_vm(cluster: Cluster, name: str) -> None:
    vm = yaml.safe_load(EXAMPLE.read_text())
    vm["metadata"]["name"] = name
    cluster.plane.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(vm))


def running_and_ready(cluster: Cluster, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        vm = cluster.get("vm", name, NAMESPACE) or {}
        phase = (vm.get("status") or {}).get("phase")
        ready = condition(vm, "Ready").get("status") == "True"
        return vm if phase == "Running" and ready else None

    return cluster.wait(check, timeout=120, what=f"vm {name} Running and Ready")


def assert_never_refused(cluster: Cluster) -> None:
    refusals = cluster.refusals()
    assert not refusals, "a call was refused:\n" + "\n".join(refusals[:20])


@pytest.fixture(scope="module")
def running_vm(cluster: Cluster) -> Iterator[str]:
    name = "guarded"
    apply_vm(cluster, name)
    running_and_ready(cluster, name)
    try:
        yield name
    finally:
        cluster.plane.kubectl("delete", "vm", name, "-n", NAMESPACE, "--wait=false", check=False)


def test_restricted_controller_and_agent_run_a_vm_and_delete_it(cluster: Cluster) -> None:
    name = "happy"
    apply_vm(cluster, name)
    vm = running_and_ready(cluster, name)
    uid = vm["metadata"]["uid"]
    assert vm["status"]["host"] == cluster.host.name
    assert vm["metadata"]["labels"]["kubevisor.io/host"] == cluster.host.name
    assert condition(vm, "Scheduled")["status"] == "True"
    assert vm["metadata"].get("finalizers"), "the controller put no finalizer"
    assert uid in cluster.domains()
    serial = cluster.agent_state / "vms" / uid / "serial.log"
    eventually(
        lambda: serial.exists() and MARKER in serial.read_text(errors="replace"),
        timeout=120,
        what="the guest's marker on its serial console",
    )

    cluster.plane.kubectl("delete", "vm", name, "-n", NAMESPACE, "--wait=false")
    cluster.wait(
        lambda: cluster.get("vm", name, NAMESPACE) is None,
        timeout=120,
        what=f"vm {name} gone (its finalizer released by the controller)",
    )
    assert uid not in cluster.domains()
    assert_never_refused(cluster)


def test_the_agent_credential_cannot_delete_a_vm(cluster: Cluster, running_vm: str) -> None:
    plane, agent = cluster.plane, cluster.agent_kubeconfig
    for target in ("virtualmachines.kubevisor.io", f"virtualmachines.kubevisor.io/{running_vm}"):
        can_i = plane.kubectl(
            "auth", "can-i", "delete", target, "-n", NAMESPACE, kubeconfig=agent, check=False
        )
        assert can_i.stdout.strip() == "no", can_i.stderr

    done = plane.kubectl("delete", "vm", running_vm, "-n", NAMESPACE, kubeconfig=agent, check=False)
    assert done.returncode != 0
    assert "Forbidden" in done.stderr and "cannot delete resource" in done.stderr, done.stderr
    assert (cluster.get("vm", running_vm, NAMESPACE) or {}).get("metadata", {}).get(
        "deletionTimestamp"
    ) is None
    running_and_ready(cluster, running_vm)
    assert_never_refused(cluster)


def test_the_agent_credential_cannot_write_another_hosts_status(
    cluster: Cluster, running_vm: str
) -> None:
    """RBAC cannot name the host (one ServiceAccount for every agent): it allows a patch of
    any host's status and no update at all; the admission policy refuses the patch."""
    plane, agent = cluster.plane, cluster.agent_kubeconfig
    status = "hypervisorhosts.kubevisor.io"

    def can_i(verb: str) -> str:
        done = plane.kubectl(
            "auth",
            "can-i",
            verb,
            f"{status}/{OTHER_HOST}",
            "--subresource=status",
            kubeconfig=agent,
            check=False,
        )
        return str(done.stdout.strip())

    assert can_i("update") == "no"
    assert can_i("patch") == "yes"

    patched = other_host_status_patch(agent)
    assert patched.status == 403, patched
    assert f"ValidatingAdmissionPolicy '{POLICY}'" in patched.message, patched
    assert f"not {OTHER_HOST}" in patched.message, patched

    other = cluster.get("hvh", OTHER_HOST)
    other["status"] = {"vmCount": FORGED_COUNT}
    replaced = plane.kubectl(
        "replace",
        "--subresource=status",
        "-f",
        "-",
        input=json.dumps(other),
        kubeconfig=agent,
        check=False,
    )
    assert replaced.returncode != 0
    assert "Forbidden" in replaced.stderr and "cannot update resource" in replaced.stderr
    # The controller writes this host's status (NotReady, no VMs): never the agent's count.
    assert cluster.get("hvh", OTHER_HOST)["status"].get("vmCount") != FORGED_COUNT
    # Its own host it keeps writing.
    assert host_ready(cluster)
    assert_never_refused(cluster)
