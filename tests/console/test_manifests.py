"""deploy/manifests/components/console, rendered over the base: the names, ports, paths
and flags its pieces must agree on (cert-manager is not installed here, so this is a
render check, not a server-side dry run)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import REPO, controlplane_bin, require
from kubevisor.agent import main as agent_main
from kubevisor.console import protocol
from kubevisor.drivers.libvirt import diagnostics as libvirt_diagnostics
from kubevisor.handlers import main as controller_main

MANIFESTS = REPO / "deploy" / "manifests"
CONTROLLER = ("Deployment", "kubevisor-controller")


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    bin_dir = controlplane_bin()
    require(
        bin_dir is not None,
        what="kubectl from the local control-plane build",
        how="build it with hack/controlplane/build.sh (or run `make test`)",
    )
    assert bin_dir is not None
    where = tmp_path_factory.mktemp("console-overlay")
    base = os.path.relpath(MANIFESTS, where)
    where.joinpath("kustomization.yaml").write_text(
        f"resources: [{base}]\ncomponents: [{base}/components/console]\n"
    )
    done = subprocess.run(
        [str(bin_dir / "kubectl"), "kustomize", str(where)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def container(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return dict(find(objects, kind, name)["spec"]["template"]["spec"]["containers"][0])


def mounted(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, str]:
    """Mount path -> Secret name of the workload's first container."""
    pod = find(objects, kind, name)["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    mounts = pod["containers"][0]["volumeMounts"]
    return {m["mountPath"]: secrets[m["name"]] for m in mounts if m["name"] in secrets}


def flag(args: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"{name}="))


def secret_of(path: str, mounts: dict[str, str]) -> str:
    return mounts[str(Path(path).parent)]


def test_the_processes_accept_the_flags(objects: list[dict[str, Any]]) -> None:
    controller = controller_main.parse_args(
        container(objects, "Deployment", "kubevisor-controller")["args"]
    )
    assert controller.console_api_port == 8443
    agent = agent_main.parse_args(container(objects, "DaemonSet", "kubevisor-agent")["args"])
    assert agent.console_port == 9443
    assert agent.console_allowed_clients == protocol.API_CLIENT


def test_certificates_match_what_each_side_checks(objects: list[dict[str, Any]]) -> None:
    certificates = {
        o["spec"]["secretName"]: o["spec"] for o in objects if o["kind"] == "Certificate"
    }
    args = container(objects, "Deployment", "kubevisor-controller")["args"]
    mounts = mounted(objects, "Deployment", "kubevisor-controller")
    serving = certificates[secret_of(flag(args, "--console-api-cert"), mounts)]
    assert "kubevisor-api.kubevisor-system.svc" in serving["dnsNames"]
    client = certificates[secret_of(flag(args, "--console-client-cert"), mounts)]
    assert client["commonName"] == protocol.API_CLIENT
    assert "client auth" in client["usages"]
    agent_args = container(objects, "DaemonSet", "kubevisor-agent")["args"]
    agent_mounts = mounted(objects, "DaemonSet", "kubevisor-agent")
    agent_cert = certificates[secret_of(flag(agent_args, "--console-cert"), agent_mounts)]
    assert flag(args, "--console-agent-server-name") in agent_cert["dnsNames"]
    # Everything is signed by the one console CA, which each side trusts as ca.crt.
    assert {c["issuerRef"]["name"] for c in (serving, client, agent_cert)} == {
        "kubevisor-console-ca"
    }
    assert Path(flag(args, "--console-agent-ca")).name == "ca.crt"
    assert Path(flag(agent_args, "--console-client-ca")).name == "ca.crt"


def test_the_apiservice_reaches_the_controller(objects: list[dict[str, Any]]) -> None:
    api = find(objects, "APIService", f"{protocol.VERSION}.{protocol.GROUP}")
    service_ref = api["spec"]["service"]
    service = find(objects, "Service", service_ref["name"])
    assert service["metadata"]["namespace"] == service_ref["namespace"]
    port = next(p for p in service["spec"]["ports"] if p["port"] == service_ref["port"])
    controller = find(objects, "Deployment", "kubevisor-controller")
    labels = controller["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    first = container(objects, *CONTROLLER)
    ports = {p["name"]: p["containerPort"] for p in first["ports"]}
    args = first["args"]
    assert ports[port["targetPort"]] == int(flag(args, "--console-api-port"))
    # cert-manager injects the CA of the Certificate behind --console-api-cert.
    secret = secret_of(flag(args, "--console-api-cert"), mounted(objects, *CONTROLLER))
    certificate = next(
        o for o in objects if o["kind"] == "Certificate" and o["spec"]["secretName"] == secret
    )
    injected = api["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert injected == f"{certificate['metadata']['namespace']}/{certificate['metadata']['name']}"


def test_the_agent_advertises_its_pod_ip(objects: list[dict[str, Any]]) -> None:
    agent = container(objects, "DaemonSet", "kubevisor-agent")
    env = {e["name"]: e for e in agent["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
    assert ports["console"] == int(flag(agent["args"], "--console-port"))


def test_the_agent_reads_qemu_logs_where_libvirt_writes_them(objects: list[dict[str, Any]]) -> None:
    """`kubevisor diagnose` reads QEMU's log at the agent's default --qemu-log-dir for
    its --libvirt-uri, which the console component mounts read-only from the node."""
    agent = container(objects, "DaemonSet", "kubevisor-agent")
    where = libvirt_diagnostics.default_log_dir(flag(agent["args"], "--libvirt-uri"))
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    assert where is not None and mounts[str(where)].get("readOnly") is True
    spec = next(o for o in objects if o["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == mounts[str(where)]["name"])
    assert volume["hostPath"]["path"] == str(where)
