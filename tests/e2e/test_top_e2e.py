"""`kubevisor top vm|host` on the shared stack: the agents publish their metrics endpoints
in their HypervisorHosts' status, and `top` prints a row for a running VM and one per host
from two readings of the agents' per-VM metrics (bulk libvirt statistics of real QEMU)."""

from __future__ import annotations

import json

import pytest

from kubevisor.cli import main as cli
from stacks import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.apiserver, pytest.mark.libvirtd]


def top(stack: Stack, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = cli.main(["top", *args, "--interval", "1s", "--kubeconfig", str(stack.plane.kubeconfig)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_top_prints_rows_for_running_vms_and_hosts(
    stack: Stack, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for host in stack.hosts:
        endpoint = stack.get("hvh", host.name)["status"]["metricsEndpoint"]
        assert endpoint == f"http://127.0.0.1:{stack.metrics_ports[host.name]}/metrics"
    stack.apply(
        namespace,
        {
            "apiVersion": "kubevisor.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "busy"},
            "spec": {"cpu": {"vcpus": 2}, "memory": {"size": "128Mi"}},
        },
    )
    host = stack.wait_phase(namespace, "busy", "Running")["status"]["host"]

    table = top(stack, capsys, "vm", "-n", namespace).splitlines()
    assert table[0].split()[:4] == ["NAME", "HOST", "CPU(cores)", "CPU%"]
    [row] = [line.split() for line in table[1:]]
    assert row[:2] == ["busy", host]
    # QEMU booting its guest under TCG keeps a core busy.
    assert row[2].endswith("m") and int(row[2][:-1]) > 0, row

    [usage] = json.loads(top(stack, capsys, "vm", "busy", "-n", namespace, "-o", "json"))["items"]
    assert (usage["namespace"], usage["name"], usage["host"], usage["vcpus"]) == (
        namespace,
        "busy",
        host,
        2,
    )
    assert usage["memoryBytes"] > 0  # the QEMU process's RSS

    hosts = top(stack, capsys, "host").splitlines()
    assert hosts[0].split()[:3] == ["NAME", "VMS", "CPU(cores)"]
    by_name = {line.split()[0]: line.split() for line in hosts[1:]}
    assert set(by_name) == {h.name for h in stack.hosts}
    assert int(by_name[host][1]) >= 1
