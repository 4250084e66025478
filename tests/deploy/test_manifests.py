"""deploy/manifests: what the Kustomize base renders, and that the real API server accepts it.

Pure checks read `kubectl kustomize` output (the kubectl built with the apiserver, so this
tier needs the control-plane build even for them); the apiserver tests dry-run every
rendered object server-side against the real kube-apiserver with our CRDs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import REPO, controlplane_bin, require
from kubevisor.agent import main as agent_main
from kubevisor.agent import probe as agent_probe
from kubevisor.agent import watchdog as agent_watchdog
from kubevisor.api.flavor import VirtualMachineClusterFlavor
from kubevisor.cli import crds as crds_cli
from kubevisor.core.domain.host import Ovmf
from kubevisor.testbed import controlplane
from kubevisor.testbed.controlplane import ControlPlane

MANIFESTS = REPO / "deploy" / "manifests"
NAMESPACE = "kubevisor-system"

# Test stand-ins for the Prometheus Operator's ServiceMonitor and PrometheusRule CRDs
# (monitoring.coreos.com), which a real cluster gets from the Prometheus Operator: just
# enough for a dry-run.
STAND_IN_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.monitoring.coreos.com
  labels:
    kubevisor.io/test-stand-in: prometheus-operator
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {{kind: {kind}, plural: {plural}, singular: {singular}}}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"""
PROMETHEUS_OPERATOR_STAND_IN = "---".join(
    STAND_IN_CRD.format(kind=kind, plural=f"{kind.lower()}s", singular=kind.lower())
    for kind in ("ServiceMonitor", "PrometheusRule")
)


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


def agent_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = find(objects, "DaemonSet", "kubevisor-agent")["spec"]["template"]["spec"]
    return pod


def pod_container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in pod["containers"] if c["name"] == name]
    return found


def flag(workload_container: dict[str, Any], name: str) -> str | None:
    """The value of `--name=VALUE` among the container's args, None when absent."""
    values = [a.split("=", 1)[1] for a in workload_container["args"] if a.startswith(f"{name}=")]
    assert len(values) <= 1, f"{name} given {len(values)} times"
    return values[0] if values else None


def source(pod: dict[str, Any], name: str, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The volume and mount that bring `path` into container `name`: the innermost mount
    holding it."""
    holding = [
        m
        for m in pod_container(pod, name)["volumeMounts"]
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert holding, f"{path} is not mounted into {name}"
    mount = max(holding, key=lambda m: len(m["mountPath"]))
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return volume, mount


def firmware() -> list[str]:
    """The UEFI files the agent looks for, where the domain XML names them for libvirtd."""
    ovmf = Ovmf()
    return [ovmf.code, ovmf.vars_template, ovmf.secure_code, ovmf.secure_vars_template]


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
        pytest.param("CustomResourceDefinition", "networks.kubevisor.io", id="network-crd"),
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
        pytest.param(
            "ValidatingAdmissionPolicy", "kubevisor-provider-networks", id="provider-networks"
        ),
        pytest.param("ClusterRole", "kubevisor-network-admin", id="network-admin"),
        pytest.param("ClusterRole", "kubevisor-flavors-view", id="flavors-view"),
        pytest.param(
            "CustomResourceDefinition", "virtualmachineclusterflavors.kubevisor.io", id="cflavors"
        ),
        pytest.param(
            "CustomResourceDefinition", "virtualmachineflavors.kubevisor.io", id="flavors"
        ),
    ],
)
def test_base_has(base: list[dict[str, Any]], kind: str, name: str) -> None:
    obj = find(base, kind, name)
    assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kubevisor"


def test_the_flavors_component_holds_valid_cluster_flavors() -> None:
    component = MANIFESTS / "components" / "flavors"
    kustomization = yaml.safe_load((component / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    shipped = list(yaml.safe_load_all((component / "flavors.yaml").read_text()))
    names = [VirtualMachineClusterFlavor.model_validate(obj).metadata["name"] for obj in shipped]
    assert names == [
        "m1.tiny", "m1.small", "m1.medium", "m1.large", "m1.xlarge", "cx1.large", "cx1.xlarge"
    ]  # fmt: skip


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
    assert host_paths == {
        "libvirt-run": "/var/run/libvirt",
        "state": "/var/lib/kubevisor",
        "qemu-conf": "/etc/libvirt/qemu.conf",
        "ovmf": "/usr/share/OVMF",
        "vhost-net": "/dev/vhost-net",
    }
    assert [c["name"] for c in pod["containers"]] == ["agent", "watchdog"]
    agent = pod_container(pod, "agent")
    mounts = {m["name"]: m["mountPath"] for m in agent["volumeMounts"]}
    assert mounts["libvirt-run"] == "/var/run/libvirt", "libvirt-sock at its usual path"
    assert mounts["state"] == "/var/lib/kubevisor", "libvirtd sees disk paths unchanged"
    assert "--host=$(NODE_NAME)" in agent["args"]
    assert flag(agent, "--kvm-check") == "libvirt", "it cannot open /dev/kvm: TCG everywhere"
    (node_name,) = [e for e in agent["env"] if e["name"] == "NODE_NAME"]
    assert node_name["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_agent_reads_the_hosts_own_qemu_conf_firmware_and_vhost_net(
    base: list[dict[str, Any]],
) -> None:
    """What libvirt's API does not report (QEMU's seccomp sandbox and cgroup controllers
    in qemu.conf, UEFI firmware, /dev/vhost-net), the agent reads from the host: each read
    only, and at the host's own path, because the domain XML names the firmware there."""
    pod = agent_pod(base)
    qemu_conf = flag(pod_container(pod, "agent"), "--qemu-conf")
    assert qemu_conf is not None, "without it every host reports its QEMU sandbox as unknown"
    kinds = {}
    for path in (qemu_conf, *firmware(), str(agent_probe.VHOST_NET)):
        volume, mount = source(pod, "agent", path)
        assert mount.get("readOnly") is True, path
        assert volume["hostPath"]["path"] + path.removeprefix(mount["mountPath"]) == path
        kinds[volume["name"]] = volume["hostPath"]["type"]
    # A host without the ovmf package reports no UEFI rather than failing the pod; a host
    # without qemu.conf or vhost-net is no QEMU host kubevisor can use, and says so.
    assert kinds == {"qemu-conf": "File", "ovmf": "DirectoryOrCreate", "vhost-net": "CharDevice"}


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
    monitoring = render(MANIFESTS / "monitoring")
    kinds = sorted(o["kind"] for o in monitoring)
    assert kinds == ["ConfigMap", "PrometheusRule", "ServiceMonitor"]
    (monitor,) = [o for o in monitoring if o["kind"] == "ServiceMonitor"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    for service in ("kubevisor-controller-metrics", "kubevisor-agent-metrics"):
        assert selector.items() <= find(base, "Service", service)["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def libvirtd_in_pod_overlay(where: Path) -> Path:
    """An overlay of the base with the libvirtd-in-pod component, as docs/install.md shows."""
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


def test_host_network_component_gives_the_agent_the_nodes_data_plane(tmp_path: Path) -> None:
    """Links and rules in the node's namespace, DHCP namespaces under the node's /run/netns
    (propagated back to the host, so the next agent adopts them), the node's IP as the
    tunnel endpoint."""
    base = os.path.relpath(MANIFESTS, tmp_path)
    tmp_path.joinpath("kustomization.yaml").write_text(
        f"resources: [{base}]\ncomponents: [{base}/components/host-network]\n"
    )
    pod = agent_pod(render(tmp_path))
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    agent = pod_container(pod, "agent")
    assert agent["securityContext"]["privileged"] is True
    (netns,) = [m for m in agent["volumeMounts"] if m["name"] == "netns"]
    assert (netns["mountPath"], netns["mountPropagation"]) == ("/run/netns", "Bidirectional")
    args = [a.replace("$(NODE_NAME)", "n").replace("$(NODE_IP)", "10.0.0.7") for a in agent["args"]]
    parsed = agent_main.parse_args(args)
    assert (parsed.host_network, str(parsed.tunnel_ip)) == ("linux", "10.0.0.7")


LIBVIRTD_QEMU_CONF = "/etc/libvirt/qemu.conf"
LIBVIRTD_FIRMWARE = "/usr/share/OVMF"


def libvirtd_image(root: Path, *, configured: bool) -> Path:
    """The files of a libvirtd image the init container reads, under `root`: a qemu.conf
    (with the sandbox off) and the firmware Ovmf names, or neither."""
    root.mkdir()
    if configured:
        conf = root / LIBVIRTD_QEMU_CONF.lstrip("/")
        conf.parent.mkdir(parents=True)
        conf.write_text("seccomp_sandbox = 0\ncgroup_controllers = [ ]\n")
        for path in firmware():
            file = root / path.lstrip("/")
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(b"firmware of " + path.encode())
        # Some distributions link the files from elsewhere (Fedora: ../edk2/ovmf/): the
        # copies must be the files, not links that point out of the copy.
        template = root / Ovmf().vars_template.lstrip("/")
        elsewhere = root / "usr/share/edk2/ovmf" / template.name
        elsewhere.parent.mkdir(parents=True)
        template.rename(elsewhere)
        template.symlink_to(Path("../edk2/ovmf") / template.name)
    return root


@pytest.mark.parametrize("configured", [True, False], ids=["qemu-conf-and-ovmf", "neither"])
def test_libvirtd_in_pod_agent_reads_qemu_conf_and_firmware_of_its_libvirtd(
    tmp_path: Path, configured: bool
) -> None:
    """In mode 2 libvirtd's qemu.conf and firmware are its image's, which the host may not
    have: an init container of that image copies them where the agent reads them. Its
    script runs here on a stand-in for the image, and the agent's probe reads the copies."""
    (tmp_path / "overlay").mkdir()
    pod = agent_pod(render(libvirtd_in_pod_overlay(tmp_path / "overlay")))
    (setup,) = pod["initContainers"]
    assert setup["image"] == pod_container(pod, "libvirtd")["image"]
    qemu_conf = flag(pod_container(pod, "agent"), "--qemu-conf")
    assert qemu_conf == LIBVIRTD_QEMU_CONF
    image = libvirtd_image(tmp_path / "image", configured=configured)
    script = setup["command"][-1]
    for read in (LIBVIRTD_QEMU_CONF, LIBVIRTD_FIRMWARE):
        assert read in script, f"the init container does not copy libvirtd's {read}"
        script = script.replace(read, str(image) + read)
    for mount in setup["volumeMounts"]:
        volume_dir = tmp_path / "volumes" / mount["name"]
        volume_dir.mkdir(parents=True)
        script = script.replace(mount["mountPath"], str(volume_dir))
    subprocess.run(["sh", "-ec", script], check=True)
    shutil.rmtree(image)  # the agent sees the volumes only
    seen: dict[str, Path] = {}
    for path in (qemu_conf, *firmware()):
        volume, mount = source(pod, "agent", path)
        assert "emptyDir" in volume, f"{path}: not from the host, which may have no libvirt"
        volume_dir = tmp_path / "volumes" / volume["name"] / mount.get("subPath", "")
        seen[path] = volume_dir / path.removeprefix(mount["mountPath"]).lstrip("/")
    ovmf = Ovmf(
        code=str(seen[Ovmf().code]),
        vars_template=str(seen[Ovmf().vars_template]),
        secure_code=str(seen[Ovmf().secure_code]),
        secure_vars_template=str(seen[Ovmf().secure_vars_template]),
    )
    found = agent_probe.capabilities(ovmf, qemu_conf=seen[qemu_conf])
    # The image's qemu.conf turns the sandbox off; without one, libvirt's default is on.
    assert (found.seccomp_sandbox, found.uefi, found.secure_boot) == (
        (False, True, True) if configured else (True, False, False)
    )
    assert agent_probe.cgroup_controllers(seen[qemu_conf]) == (frozenset() if configured else None)
    volume, _ = source(pod, "agent", str(agent_probe.VHOST_NET))
    assert volume["hostPath"]["path"] == str(agent_probe.VHOST_NET), "the privileged libvirtd's too"


@pytest.mark.parametrize(
    "overlay",
    [
        pytest.param(MANIFESTS, id="base"),
        pytest.param(None, id="libvirtd-in-pod"),
        pytest.param(REPO / "hack" / "kind" / "overlay", id="kind-overlay"),
    ],
)
def test_the_agents_arguments_are_ones_it_accepts(overlay: Path | None, tmp_path: Path) -> None:
    pod = agent_pod(render(overlay or libvirtd_in_pod_overlay(tmp_path)))
    args = [
        a.replace("$(NODE_NAME)", "node-1").replace("$(NODE_IP)", "10.0.0.2")
        for a in pod_container(pod, "agent")["args"]
    ]
    assert agent_main.parse_args(args).host == "node-1"


@pytest.mark.parametrize(
    "overlay",
    [pytest.param(MANIFESTS, id="base"), pytest.param(None, id="libvirtd-in-pod")],
)
def test_the_watchdog_watches_the_agents_state_and_libvirtd(
    overlay: Path | None, tmp_path: Path
) -> None:
    """Beside the agent in its pod, reading its heartbeat where the agent writes it,
    through the same libvirtd, and able to kill it (one process namespace)."""
    pod = agent_pod(render(overlay or libvirtd_in_pod_overlay(tmp_path)))
    assert pod["shareProcessNamespace"] is True
    agent, dog = pod_container(pod, "agent"), pod_container(pod, "watchdog")
    assert dog["command"] == ["kubevisor-watchdog"]
    agent_args = agent_main.parse_args([a.replace("$(NODE_IP)", "10.0.0.2") for a in agent["args"]])
    dog_args = agent_watchdog.parse_args(dog["args"])
    assert (dog_args.host, dog_args.libvirt_uri, dog_args.state_dir) == (
        agent_args.host, agent_args.libvirt_uri, agent_args.state_dir
    )  # fmt: skip
    mounts = [{(m["name"], m["mountPath"]) for m in c["volumeMounts"]} for c in (agent, dog)]
    assert {("state", str(dog_args.state_dir)), ("libvirt-run", "/var/run/libvirt")} <= (
        mounts[0] & mounts[1]
    )


INSTALL_GUIDE = REPO / "docs" / "install.md"


def install_guide_overlays() -> list[str]:
    """The overlays docs/install.md shows: its YAML blocks headed by the file they are."""
    return re.findall(
        r"```yaml\n(# my-cluster/kustomization\.yaml\n.*?)```", INSTALL_GUIDE.read_text(), re.S
    )


def install_guide_overlay(where: Path, text: str) -> Path:
    """One of them in `where`, with the guide's checkout (`../kubevisor/`) this one."""
    repo = os.path.relpath(REPO, where)
    where.mkdir(parents=True, exist_ok=True)
    where.joinpath("kustomization.yaml").write_text(text.replace("../kubevisor/", f"{repo}/"))
    return where


def test_the_install_guides_overlays_set_the_images_and_flags_they_say(tmp_path: Path) -> None:
    overlays = install_guide_overlays()
    assert len(overlays) == 2, "the plain overlay and the one with libvirtd in the pod"
    for number, text in enumerate(overlays):
        objects = render(install_guide_overlay(tmp_path / str(number), text))
        images = {
            c["image"]
            for o in objects
            if o["kind"] in ("Deployment", "DaemonSet")
            for c in o["spec"]["template"]["spec"]["containers"]
            + o["spec"]["template"]["spec"].get("initContainers", [])
        }
        for entry in yaml.safe_load(text)["images"]:
            assert f"{entry['newName']}:{entry['newTag']}" in images
            assert not [i for i in images if i.startswith(entry["name"] + ":")], entry["name"]
        args = pod_container(agent_pod(objects), "agent")["args"]
        assert agent_main.parse_args([a.replace("$(NODE_NAME)", "n") for a in args]).host == "n"
    plain = agent_pod(render(tmp_path / "0"))
    assert "--image-cache-max-size=200Gi" in pod_container(plain, "agent")["args"]


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
    # kind's nodes have no libvirt setup to read, and the test driver needs none.
    pod = agent_pod(objects)
    host_paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host_paths == {"/var/lib/kubevisor"}
    assert flag(agent, "--qemu-conf") is None
    script = (REPO / "hack" / "kind" / "up.sh").read_text()
    for needed in ("kubevisor-controller:$TAG", "kubevisor-agent:$TAG", "hack/kind/overlay"):
        assert needed in script


# -- apiserver: server-side dry-run --------------------------------------------------------


@pytest.fixture(scope="module")
def plane(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """The session control plane with what the base's objects need to exist first: the
    namespace, kopf's peering CRDs, and the stand-in Prometheus Operator CRDs. These stay (other
    modules may use the namespace; the CRDs are harmless)."""
    control_plane.kubectl("create", "namespace", NAMESPACE, check=False)
    stand_in = control_plane.state_dir / "prometheus-operator-stand-in.yaml"
    stand_in.write_text(PROMETHEUS_OPERATOR_STAND_IN)
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


@pytest.mark.apiserver
def test_server_side_dry_run_accepts_the_install_guides_overlays(
    plane: ControlPlane, tmp_path: Path
) -> None:
    for number, text in enumerate(install_guide_overlays()):
        directory = install_guide_overlay(tmp_path / str(number), text)
        objects = render(directory)
        done = plane.kubectl(
            "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-k", str(directory)
        )
        accepted = [line for line in done.stdout.splitlines() if "(server dry run)" in line]
        assert len(accepted) == len(objects), done.stdout
