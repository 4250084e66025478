"""deploy/manifests: what the Kustomize base renders, and that the real API server accepts it.

Pure checks read `kubectl kustomize` output (the kubectl built with the apiserver, so this
tier needs the control-plane build even for them); the apiserver tests dry-run every
rendered object server-side against the real kube-apiserver with our CRDs.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import REPO, controlplane_bin, require
from kubevisor.cli import crds as crds_cli
from kubevisor.testbed import controlplane
from kubevisor.testbed.controlplane import ControlPlane

MANIFESTS = REPO / "deploy" / "manifests"
NAMESPACE = "kubevisor-system"

# A test stand-in for the Prometheus Operator's ServiceMonitor CRD (monitoring.coreos.com),
# which a real cluster gets from the Prometheus Operator: just enough for a dry-run.
SERVICEMONITOR_STAND_IN = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
  labels:
    kubevisor.io/test-stand-in: prometheus-operator
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"""


def kubectl_binary() -> Path:
    bin_dir = controlplane_bin()
    require(
        bin_dir is not None,
        what="kubectl from the local control-plane build",
        how="build it with hack/controlplane/build.sh (or run `make test`)",
    )
    assert bin_dir is not None
    return bin_dir / "kubectl"


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR` as a list of objects (shared with the other deploy tests)."""
    done = subprocess.run(
        [str(kubectl_binary()), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(MANIFESTS)


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return result


# -- pure: what the base renders ----------------------------------------------------------


def test_crd_copies_are_current() -> None:
    """deploy/manifests/crds/ holds what the models generate, as deploy/crds/ does."""
    stale = crds_cli.stale_files(MANIFESTS / "crds")
    assert not stale, (
        "deploy/manifests/crds is stale; run `kubevisor crds generate --dir "
        "deploy/manifests/crds`\n" + "".join(stale.values())
    )


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        pytest.param("CustomResourceDefinition", "virtualmachines.kubevisor.io", id="vm-crd"),
        pytest.param("CustomResourceDefinition", "hypervisorhosts.kubevisor.io", id="host-crd"),
        pytest.param("CustomResourceDefinition", "migrationjobs.kubevisor.io", id="mig-crd"),
        pytest.param("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev", id="kopf-crd"),
        pytest.param("CustomResourceDefinition", "kopfpeerings.kopf.dev", id="kopf-ns-crd"),
        pytest.param("ClusterKopfPeering", "kubevisor", id="peering-object"),
        pytest.param("Namespace", NAMESPACE, id="namespace"),
        pytest.param("ServiceAccount", "kubevisor-controller", id="controller-sa"),
        pytest.param("ServiceAccount", "kubevisor-agent", id="agent-sa"),
        pytest.param("Deployment", "kubevisor-controller", id="controller"),
        pytest.param("DaemonSet", "kubevisor-agent", id="agent"),
        pytest.param("PodDisruptionBudget", "kubevisor-controller", id="pdb"),
        pytest.param("Service", "kubevisor-controller-metrics", id="controller-metrics"),
        pytest.param("Service", "kubevisor-agent-metrics", id="agent-metrics"),
        pytest.param("ValidatingAdmissionPolicy", "kubevisor-agent-own-host", id="policy"),
    ],
)
def test_base_has(base: list[dict[str, Any]], kind: str, name: str) -> None:
    obj = find(base, kind, name)
    assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kubevisor"


def test_every_namespaced_object_is_in_kubevisor_system(base: list[dict[str, Any]]) -> None:
    cluster_kinds = {
        "CustomResourceDefinition",
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterKopfPeering",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    wrong = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in base
        if o["kind"] not in cluster_kinds and o["metadata"].get("namespace") != NAMESPACE
    ]
    assert wrong == []


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        pytest.param("Deployment", "kubevisor-controller", id="controller"),
        pytest.param("DaemonSet", "kubevisor-agent", id="agent"),
    ],
)
def test_workloads_request_resources_and_drop_capabilities(
    base: list[dict[str, Any]], kind: str, name: str
) -> None:
    for container in containers(find(base, kind, name)):
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        assert security.get("privileged", False) is False
        assert ":" in container["image"], "images carry a tag"


def test_controller_runs_two_peered_replicas_probed_on_kopf_liveness(
    base: list[dict[str, Any]],
) -> None:
    deployment = find(base, "Deployment", "kubevisor-controller")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert "--peering=kubevisor" in container["args"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {"name": "healthz", "containerPort": 8080} in container["ports"]
    assert {"name": "metrics", "containerPort": 9090} in container["ports"]
    pdb = find(base, "PodDisruptionBudget", "kubevisor-controller")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_agent_runs_on_hypervisor_nodes_with_the_libvirt_socket_and_state(
    base: list[dict[str, Any]],
) -> None:
    pod = find(base, "DaemonSet", "kubevisor-agent")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubevisor.io/hypervisor": "true"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host_paths == {"libvirt-run": "/var/run/libvirt", "state": "/var/lib/kubevisor"}
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["libvirt-run"] == "/var/run/libvirt", "libvirt-sock at its usual path"
    assert mounts["state"] == "/var/lib/kubevisor", "libvirtd sees disk paths unchanged"
    assert "--host=$(NODE_NAME)" in container["args"]
    (node_name,) = [e for e in container["env"] if e["name"] == "NODE_NAME"]
    assert node_name["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_metrics_services_select_the_pods_and_the_servicemonitor_the_services(
    base: list[dict[str, Any]],
) -> None:
    for service, workload, port in (
        ("kubevisor-controller-metrics", find(base, "Deployment", "kubevisor-controller"), 9090),
        ("kubevisor-agent-metrics", find(base, "DaemonSet", "kubevisor-agent"), 9091),
    ):
        spec = find(base, "Service", service)["spec"]
        assert (
            spec["selector"].items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        )
        assert spec["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics"}]
    (monitor,) = render(MANIFESTS / "monitoring")
    selector = monitor["spec"]["selector"]["matchLabels"]
    for service in ("kubevisor-controller-metrics", "kubevisor-agent-metrics"):
        assert selector.items() <= find(base, "Service", service)["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def libvirtd_in_pod_overlay(where: Path) -> Path:
    """An overlay of the base with the libvirtd-in-pod component, as the README shows."""
    base = os.path.relpath(MANIFESTS, where)
    where.joinpath("kustomization.yaml").write_text(
        f"resources: [{base}]\ncomponents: [{base}/components/libvirtd-in-pod]\n"
    )
    return where


def test_libvirtd_in_pod_shares_the_socket_inside_the_pod(tmp_path: Path) -> None:
    objects = render(libvirtd_in_pod_overlay(tmp_path))
    pod = find(objects, "DaemonSet", "kubevisor-agent")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["libvirt-run"] == {"name": "libvirt-run", "emptyDir": {}}
    by_name = {c["name"]: c for c in pod["containers"]}
    assert by_name["libvirtd"]["securityContext"]["privileged"] is True
    assert by_name["agent"]["securityContext"]["privileged"] is False
    for container in by_name.values():
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["libvirt-run"] == "/var/run/libvirt"
        assert mounts["state"] == "/var/lib/kubevisor"


def test_kind_overlay_runs_the_loaded_images_on_the_test_driver() -> None:
    objects = render(REPO / "hack" / "kind" / "overlay")
    controller = containers(find(objects, "Deployment", "kubevisor-controller"))[0]
    agent = containers(find(objects, "DaemonSet", "kubevisor-agent"))[0]
    assert (controller["image"], agent["image"]) == (
        "kubevisor-controller:kind",
        "kubevisor-agent:kind",
    )
    assert controller["imagePullPolicy"] == agent["imagePullPolicy"] == "Never"
    assert "--libvirt-uri=test:///default" in agent["args"]
    script = (REPO / "hack" / "kind" / "up.sh").read_text()
    for needed in ("kubevisor-controller:$TAG", "kubevisor-agent:$TAG", "hack/kind/overlay"):
        assert needed in script


# -- apiserver: server-side dry-run --------------------------------------------------------


@pytest.fixture(scope="module")
def plane(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """The session control plane with what the base's objects need to exist first: the
    namespace, kopf's peering CRDs, and the stand-in ServiceMonitor CRD. These stay (other
    modules may use the namespace; the CRDs are harmless)."""
    control_plane.kubectl("create", "namespace", NAMESPACE, check=False)
    stand_in = control_plane.state_dir / "servicemonitor-stand-in.yaml"
    stand_in.write_text(SERVICEMONITOR_STAND_IN)
    controlplane.install_crds(control_plane, [MANIFESTS / "crds" / "kopf-peering.yaml", stand_in])
    yield control_plane


@pytest.mark.apiserver
@pytest.mark.parametrize(
    "directory",
    [
        pytest.param(MANIFESTS / "crds", id="crds"),
        pytest.param(MANIFESTS, id="base"),
        pytest.param(MANIFESTS / "monitoring", id="monitoring"),
        pytest.param(REPO / "deploy" / "grafana", id="grafana"),
        pytest.param(REPO / "hack" / "kind" / "overlay", id="kind-overlay"),
        pytest.param(None, id="libvirtd-in-pod"),
    ],
)
def test_server_side_dry_run_accepts_every_object(
    plane: ControlPlane, directory: Path | None, tmp_path: Path
) -> None:
    if directory is None:
        directory = libvirtd_in_pod_overlay(tmp_path)
    objects = render(directory)
    done = plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-k", str(directory)
    )
    accepted = [line for line in done.stdout.splitlines() if "(server dry run)" in line]
    assert len(accepted) == len(objects), done.stdout
