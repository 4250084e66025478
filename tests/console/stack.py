"""The pieces of the private console stack (conftest.py builds it)."""

from __future__ import annotations

import base64
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import ManagedProcess
from kubevisor.testbed.controlplane import ControlPlane
from kubevisor.testbed.hosts import LocalHost

from .pki import Pki

NAMESPACE = "console"
SYSTEM = "kubevisor-system"
# One serving certificate for every agent, with this name and no address, as the
# deploy/manifests/components/console component issues it.
AGENT_NAME = "kubevisor-agent.kubevisor-system.svc"
# Numbered far from the shared hosts (1, 2) and the e2e extra host (3).
HOST_INDEX = 7


@dataclass
class ConsoleStack:
    plane: ControlPlane
    host: LocalHost
    pki: Pki
    agent_url: str
    api_address: str
    api_port: int
    controller: ManagedProcess
    agent: ManagedProcess
    vm_uid: str = ""

    def get(self, *args: str) -> Any:
        done = self.plane.kubectl("get", *args, "-o", "json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None


def vm(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"memory": {"size": "128Mi"}},
    }


def qemu_pid(uuid: str) -> int:
    """The pid of the QEMU process running domain `uuid` (on any local host)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if words and b"qemu-system" in words[0] and uuid.encode() in words:
            return int(cmdline.parent.name)
    raise AssertionError(f"no QEMU process runs domain {uuid}")


def global_address() -> str | None:
    """An IPv4 address of this machine outside loopback, or None.

    The aggregator dials an APIService's Endpoints (`--enable-aggregator-routing`), and
    Endpoints may not hold loopback addresses, so the console API listens on this one.
    """
    done = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True
    )
    for line in done.stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            return fields[fields.index("inet") + 1].split("/")[0]
    return None


def aggregation(pki: Pki, address: str, port: int) -> list[dict[str, Any]]:
    """The APIService, and a selector-less Service with Endpoints at address:port."""
    labels = {"kubernetes.io/service-name": "kubevisor-api"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kubevisor-api", "namespace": SYSTEM},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "kubevisor-api", "namespace": SYSTEM},
            "subsets": [
                {"addresses": [{"ip": address}], "ports": [{"name": "https", "port": port}]}
            ],
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "kubevisor-api-local", "namespace": SYSTEM, "labels": labels},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1alpha1.subresources.kubevisor.io"},
            "spec": {
                "group": "subresources.kubevisor.io",
                "version": "v1alpha1",
                "groupPriorityMinimum": 1000,
                "versionPriority": 100,
                "service": {"namespace": SYSTEM, "name": "kubevisor-api", "port": 443},
                "caBundle": base64.b64encode(pki.ca.read_bytes()).decode(),
            },
        },
    ]


def available(stack_plane: ControlPlane) -> bool:
    done = stack_plane.kubectl(
        "get",
        "apiservice",
        "v1alpha1.subresources.kubevisor.io",
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Available')].status}",
        check=False,
    )
    return done.stdout.strip() == "True"
