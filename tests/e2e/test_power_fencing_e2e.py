"""Power fencing end to end: a third host whose BMC is sushy-tools' Redfish emulator
(`testbed.bmc`), where powering the system off really stops the host — its libvirtd and
its guests. The host's agent dies (SIGKILL: the guests keep running, as after a hung agent
or a cut link); the controller powers the host off through the BMC once its heartbeat
expired, and the VM runs elsewhere right after the confirmed power-off, without the
failover grace. A BMC that refuses the credentials leaves the VM Unknown with
FencingFailed, past the point the grace would have moved it, while its old copy still
runs; `kubevisor evacuate --confirm-fenced` then moves it. A census of every host's
running domains never sees the VM twice."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from builders import tiny_vm as vm
from harness import eventually, holds_until
from kubevisor.testbed import bmc, hosts
from stacks import BmcProcess, ExtraHost, Stack

from .hostloss import (
    DomainCensus,
    all_uris,
    host_spec,
    running_elsewhere,
    running_on,
    said,
    start_on_extra,
)
from .test_migration_e2e import condition

SECRET = "bmc-e2e"
USERS = {"admin": "s3cret"}
LEASE = 8.0
GRACE = 20.0
"""The shared stack's agents' Lease and the controller's failover grace (e2e conftest)."""


@pytest.fixture
def redfish(extra_host: ExtraHost, tmp_path: Any) -> Iterator[BmcProcess]:
    """The extra host's BMC: a Redfish system named after the host."""
    process = BmcProcess(tmp_path, [bmc.System(extra_host.name, extra_host.state)], USERS)
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture
def shared_cordoned(stack: Stack) -> Iterator[None]:
    """The shared hosts take no new VMs until the test uncordons them (so its VM starts on
    the extra host); schedulable again afterwards."""
    for host in stack.hosts:
        host_spec(stack, host.name, {"unschedulable": True})
    try:
        yield
    finally:
        for host in stack.hosts:
            host_spec(stack, host.name, {"unschedulable": False})


def fence_with(stack: Stack, host: str, bmc_: BmcProcess, password: str) -> None:
    stack.kubectl("delete", "secret", SECRET, "-n", "kubevisor-system", check=False)
    stack.kubectl(
        "create",
        "secret",
        "generic",
        SECRET,
        "-n",
        "kubevisor-system",
        "--from-literal=username=admin",
        f"--from-literal=password={password}",
    )
    redfish = {"address": bmc_.address, "systemId": host, "credentialsSecret": SECRET}
    host_spec(stack, host, {"fencing": {"redfish": redfish}})


def test_a_lost_host_is_powered_off_through_redfish_and_its_vm_restarts_at_once(
    stack: Stack,
    extra_host: ExtraHost,
    redfish: BmcProcess,
    shared_cordoned: None,
    namespace: str,
) -> None:
    lost = extra_host.name
    assert extra_host.host is not None and extra_host.agent is not None
    fence_with(stack, lost, redfish, USERS["admin"])
    uid = start_on_extra(stack, extra_host, namespace, vm("powered"))["powered"]
    assert uid in running_on(extra_host.host.uri)
    pid_namespace = hosts.host_pid_namespace(extra_host.host)
    assert pid_namespace is not None
    uris = all_uris(stack, extra_host)

    with DomainCensus(uris) as census:
        killed = time.monotonic()
        extra_host.agent.kill()  # its libvirtd and the guest go on: only the BMC stops them
        moved = eventually(
            lambda: running_elsewhere(stack, namespace, "powered", lost),
            timeout=60,
            what="the VM Running on another host after the power-off",
        )
        took = time.monotonic() - killed
    sys.stderr.write(f"\npower fencing: host loss to the VM Running elsewhere in {took:.1f}s\n")
    # The grace alone would not move it before LEASE + GRACE (28 s) after the last renewal.
    assert took < 30, took
    assert uid in running_on(next(h.uri for h in stack.hosts if h.name == moved["status"]["host"]))
    assert hosts.list_hosts(extra_host.state)[0].pid is None, "the BMC stopped the host"
    assert hosts.namespace_processes(pid_namespace) == [], "its libvirtd and QEMU are gone"
    census.assert_never_twice(samples=5)

    host = stack.get("hvh", lost)
    fenced = condition(host, "Fenced")
    assert (fenced["status"], fenced["reason"]) == ("True", "PoweredOff"), fenced
    assert condition(host, "FencingFailed")["status"] == "False"
    assert host["status"].get("lastFenced")
    bmc_name = f"Redfish BMC {redfish.address} (system {lost})"
    rescheduling = said(stack, namespace, "powered", "Rescheduling")
    assert f"its old copy was powered off: {bmc_name} confirmed power Off" in rescheduling


def test_a_fence_the_bmc_refuses_keeps_the_vm_unknown_until_evacuate_confirm_fenced(
    stack: Stack,
    extra_host: ExtraHost,
    redfish: BmcProcess,
    shared_cordoned: None,
    namespace: str,
) -> None:
    lost = extra_host.name
    assert extra_host.host is not None and extra_host.agent is not None
    fence_with(stack, lost, redfish, "wrong")
    uid = start_on_extra(stack, extra_host, namespace, vm("blocked"))["blocked"]
    killed = time.monotonic()
    extra_host.agent.kill()

    def fencing_failed() -> Any:
        found = [
            c
            for c in (stack.get("hvh", lost)["status"].get("conditions") or [])
            if c["type"] == "FencingFailed" and c["status"] == "True"
        ]
        return found[0] if found else None

    failed = eventually(fencing_failed, timeout=60, what=f"FencingFailed on host {lost}")
    assert failed["reason"] == "BMCRefusedCredentials", failed
    assert "Incorrect username or password" in failed["message"], failed
    assert f"kubevisor evacuate {lost} --confirm-fenced" in failed["message"]

    # Past the time the grace would have moved it (and a retry of the fence): it stays.
    def stays() -> None:
        status = stack.get("vm", "blocked", namespace)["status"]
        assert (status["host"], status["phase"]) == (lost, "Unknown"), status
        assert uid in running_on(extra_host.host.uri), "its old copy still runs"

    holds_until(stays, deadline=killed + LEASE + GRACE + 6)
    assert "attempt 2" in fencing_failed()["message"]
    assert said(stack, "default", lost, "FencingFailed")

    extra_host.kill()  # the operator makes sure it is off, by hand
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubevisor.cli.main",
            "evacuate",
            lost,
            "--confirm-fenced",
            "--kubeconfig",
            str(stack.plane.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    eventually(
        lambda: running_elsewhere(stack, namespace, "blocked", lost),
        timeout=60,
        what="the VM Running on another host after the confirmed evacuation",
    )
    assert "confirmed stopped by hand" in said(stack, namespace, "blocked", "Rescheduling")
