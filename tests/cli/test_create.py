"""`kubevisor create vm`: the printed manifest validates against the model and the real
API server accepts it (server-side dry run); bad flag combinations are usage errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubevisor.api.virtualmachine import VirtualMachine


@pytest.mark.parametrize(
    ("flags", "spec"),
    [
        pytest.param(
            [],
            {"cpu": {"vcpus": 1}, "memory": {"size": "1Gi"}},
            id="defaults-leave-the-rest-to-the-crd",
        ),
        pytest.param(
            ["--vcpus", "4", "--memory", "8Gi", "--dedicated", "--thread-policy", "isolate"],
            {
                "cpu": {"vcpus": 4, "policy": "dedicated", "threadPolicy": "isolate"},
                "memory": {"size": "8Gi"},
            },
            id="dedicated-cpus",
        ),
        pytest.param(
            ["--memory", "2Gi", "--hugepages", "2Mi", "--run-strategy", "Halted"],
            {
                "runStrategy": "Halted",
                "cpu": {"vcpus": 1},
                "memory": {"size": "2Gi", "hugepages": {"pageSize": "2Mi"}},
            },
            id="hugepages-and-run-strategy",
        ),
        pytest.param(
            ["--group", "db", "--policy", "anti-affinity", "--max-per-host", "2"],
            {
                "cpu": {"vcpus": 1},
                "memory": {"size": "1Gi"},
                "placement": {"group": "db", "policy": "anti-affinity", "maxPerHost": 2},
            },
            id="server-group",
        ),
        pytest.param(
            ["--image", "debian-12.qcow2", "--disk-size", "10Gi", "--network", "user"],
            {
                "cpu": {"vcpus": 1},
                "memory": {"size": "1Gi"},
                "disks": [{"name": "root", "image": "debian-12.qcow2", "size": "10Gi"}],
                "networks": [{"name": "net0", "type": "user"}],
            },
            id="image-disk-and-network",
        ),
        pytest.param(
            ["--host-selector", "zone=a", "--network", "bridge:br0"],
            {
                "cpu": {"vcpus": 1},
                "memory": {"size": "1Gi"},
                "networks": [{"name": "net0", "type": "bridge", "source": "br0"}],
                "placement": {"hostSelector": {"zone": "a"}},
            },
            id="host-selector-and-bridge",
        ),
        pytest.param(
            ["--hypervisor", "lxc"],
            {"cpu": {"vcpus": 1}, "memory": {"size": "1Gi"}, "hypervisor": {"type": "lxc"}},
            id="one-hypervisor-type",
        ),
        pytest.param(
            ["--hypervisor", "kvm", "--hypervisor", "qemu"],
            {
                "cpu": {"vcpus": 1},
                "memory": {"size": "1Gi"},
                "hypervisor": {"types": ["kvm", "qemu"]},
            },
            id="a-set-of-hypervisor-types",
        ),
    ],
)
def test_manifest(offline_cli: Any, flags: list[str], spec: dict[str, Any]) -> None:
    result = offline_cli("create", "vm", "web-1", *flags)
    assert (result.code, result.err) == (0, "")
    manifest = yaml.safe_load(result.out)
    assert manifest == {
        "apiVersion": "kubevisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web-1"},
        "spec": spec,
    }
    VirtualMachine.model_validate(manifest)


@pytest.mark.apiserver
@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(["--vcpus", "2", "--memory", "512Mi"], id="small"),
        pytest.param(
            ["--vcpus", "4", "--dedicated", "--thread-policy", "require", "--hugepages", "1Gi",
             "--memory", "4Gi", "--group", "db", "--policy", "anti-affinity",
             "--image", "base.qcow2", "--network", "network:default", "--label", "app=db",
             "--hypervisor", "kvm", "--hypervisor", "qemu"],
            id="everything",
        ),
    ],
)  # fmt: skip
def test_the_api_server_accepts_the_manifest(
    offline_cli: Any, control_plane: Any, namespace: str, flags: list[str]
) -> None:
    result = offline_cli("create", "vm", "web-1", "-n", namespace, *flags)
    assert result.code == 0
    applied = control_plane.kubectl(
        "apply", "--dry-run=server", "-o", "json", "-f", "-", input=result.out
    )
    assert json.loads(applied.stdout)["metadata"]["name"] == "web-1"


def test_user_data_and_json_output(offline_cli: Any, tmp_path: Path) -> None:
    user_data = tmp_path / "user-data"
    user_data.write_text("#cloud-config\nhostname: web\n")
    result = offline_cli("create", "vm", "web", "--user-data", str(user_data), "-o", "json")
    assert result.code == 0
    assert json.loads(result.out)["spec"]["cloudInit"] == {"userData": user_data.read_text()}


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        pytest.param(
            ["--thread-policy", "isolate"],
            "threadPolicy is only allowed with policy: dedicated",
            id="thread-policy-needs-dedicated",
        ),
        pytest.param(["--policy", "affinity"], "policy requires group", id="policy-needs-group"),
        pytest.param(
            ["--group", "g", "--policy", "soft-affinity", "--max-per-host", "2"],
            "maxPerHost is only allowed with policy: anti-affinity",
            id="max-per-host-needs-anti-affinity",
        ),
        pytest.param(["--memory", "lots"], "spec.memory.size", id="bad-quantity"),
        pytest.param(["--vcpus", "0"], "spec.cpu.vcpus", id="zero-vcpus"),
        pytest.param(
            ["--memory", "1536Mi", "--hugepages", "1Gi"],
            "size must be a multiple of hugepages.pageSize",
            id="memory-not-whole-pages",
        ),
        pytest.param(["--network", "wifi"], "type must be one of", id="bad-network-type"),
        pytest.param(["--host-selector", "zone"], "KEY=VALUE", id="bad-selector"),
        pytest.param(
            ["--hypervisor", "lxc", "--hypervisor", "lxc"],
            "types must be unique",
            id="hypervisor-type-twice",
        ),
        pytest.param(["--user-data", "/no/such/file"], "--user-data", id="missing-user-data"),
    ],
)
def test_invalid_flags_are_usage_errors(offline_cli: Any, flags: list[str], error: str) -> None:
    result = offline_cli("create", "vm", "web", *flags)
    assert (result.code, result.out) == (2, "")
    assert result.err.startswith("error: ") and result.err.count("\n") == 1
    assert error in result.err
