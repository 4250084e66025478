"""`kubevisor hosts` on the real API server, for HypervisorHosts whose status the test
writes (as the agent and controller would)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kubevisor.cli import hosts

pytestmark = pytest.mark.apiserver

RUN = uuid.uuid4().hex[:6]
SELECTOR = f"cli-test=hosts-{RUN}"


def ready(status: str) -> dict[str, str]:
    return {"type": "Ready", "status": status, "reason": "Heartbeat"}


def schedulable(status: str) -> dict[str, str]:
    return {"type": "Schedulable", "status": status, "reason": "R"}


HOSTS = {
    f"a-{RUN}": {
        "hypervisor": {"type": "kvm"},
        "allocatable": {"cpu": 64, "memory": "256Gi", "disk": "1Ti"},
        "allocated": {"cpu": 12, "memory": "48Gi", "disk": "100Gi"},
        "vmCount": 5,
        "conditions": [ready("True"), schedulable("True")],
    },
    f"b-{RUN}": {
        "hypervisor": {"type": "qemu"},
        "allocatable": {"cpu": 8, "memory": "1536Mi"},
        "allocated": {"cpu": 0, "memory": "0"},
        "vmCount": 0,
        "conditions": [ready("False"), schedulable("False")],
    },
    f"c-{RUN}": None,  # registered, no status yet
}


@pytest.fixture(scope="module")
def written(control_plane: Any) -> Iterator[None]:
    for name, status in HOSTS.items():
        manifest = {
            "apiVersion": "kubevisor.io/v1alpha1",
            "kind": "HypervisorHost",
            "metadata": {"name": name, "labels": {"cli-test": f"hosts-{RUN}"}},
        }
        control_plane.kubectl("create", "-f", "-", input=json.dumps(manifest))
        if status is not None:
            control_plane.kubectl(
                "patch",
                "hypervisorhost",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps({"status": status}),
            )
    yield
    control_plane.kubectl("delete", "hypervisorhost", "-l", SELECTOR, check=False)


def test_table(cli: Any, written: None) -> None:
    result = cli("hosts", "-l", SELECTOR)
    assert (result.code, result.err) == (0, "")
    assert result.out.splitlines() == [
        "NAME       READY     SCHEDULABLE   HYPERVISOR   CPU     MEMORY       VMS",
        f"a-{RUN}   True      True          kvm          12/64   48Gi/256Gi   5",
        f"b-{RUN}   False     False         qemu         0/8     0Mi/1.5Gi    0",
        f"c-{RUN}   Unknown   Unknown       -            -/-     -/-          -",
    ]


def test_json(cli: Any, written: None) -> None:
    result = cli("hosts", "-l", SELECTOR, "-o", "json")
    assert result.code == 0
    items = json.loads(result.out)["items"]
    assert [item["name"] for item in items] == sorted(HOSTS)
    assert items[0] == {
        "name": f"a-{RUN}",
        "ready": "True",
        "schedulable": "True",
        "hypervisor": "kvm",
        "cpu": {"allocated": 12, "allocatable": 64},
        "memory": {"allocated": "48Gi", "allocatable": "256Gi"},
        "vmCount": 5,
    }
    assert items[2]["cpu"] == {"allocated": None, "allocatable": None}


def test_no_hosts_says_so_on_stderr(cli: Any) -> None:
    result = cli("hosts", "-l", "cli-test=none-such")
    assert (result.code, result.out) == (0, "")
    assert result.err == "No HypervisorHosts found.\n"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        pytest.param("1536Mi", "1.5Gi", id="mebibytes"),
        pytest.param("68719476736", "64Gi", id="plain-bytes"),
        pytest.param(None, "-", id="not-reported"),
    ],
)
def test_memory_is_shown_as_placement_prints_it(text: str | None, shown: str) -> None:
    assert hosts._memory(text) == shown
