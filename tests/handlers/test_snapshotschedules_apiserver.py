"""Snapshot schedules on a real kube-apiserver with the controller process (issue 21,
retention): the API server refuses a malformed cron expression and keep 0; a schedule
whose last snapshot is long past takes one snapshot at once, named for its due time, and
trims its Ready snapshots to `keep`, oldest first, ending with exactly `keep`.

No clock is driven: the schedule's status says its last snapshot was in 2020, so the
daily time that passed last is due now. No agent runs: the test marks the new snapshot
Ready as the VM's agent would."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from harness import ManagedProcess, eventually
from kubevisor.testbed.controlplane import ControlPlane

from .apiserver import NAMESPACE, apply, controller_process, get, patch_status

pytestmark = pytest.mark.apiserver

API = "kubevisor.io/v1alpha1"
LABEL = "kubevisor.io/snapshot-schedule"


def schedule(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "VirtualMachineSnapshotSchedule",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"vm": "db", "schedule": "0 3 * * *", "keep": 2} | spec,
    }


def snapshot(name: str, *, labelled: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "VirtualMachineSnapshot",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {LABEL: labelled}},
        "spec": {"vm": "db"},
    }


def ready(plane: ControlPlane, name: str) -> None:
    patch_status(plane, "vmsnap", name, "-n", NAMESPACE, status={"phase": "Ready"})


def names(plane: ControlPlane, schedule_name: str) -> set[str]:
    listed = get(plane, "vmsnap", "-n", NAMESPACE, "-l", f"{LABEL}={schedule_name}")
    return {item["metadata"]["name"] for item in listed["items"]}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"schedule": "every day"}, "schedule must be five cron fields", id="cron"),
        pytest.param({"schedule": "0 3 * *"}, "schedule must be five cron fields", id="four"),
        pytest.param({"keep": 0}, "spec.keep: Invalid value", id="keep-0"),
    ],
)
def test_the_api_server_refuses(plane: ControlPlane, spec: dict[str, Any], message: str) -> None:
    body = json.dumps(schedule("bad", **spec))
    refused = plane.kubectl("create", "--dry-run=server", "-f", "-", input=body, check=False)
    assert refused.returncode != 0 and message in refused.stderr, refused.stderr


@pytest.fixture
def controller(
    plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    """The controller, not started: the test sets the scene first."""
    with controller_process(plane, tmp_path_factory.mktemp("schedules")) as process:
        yield process


def test_a_schedule_with_keep_2_ends_with_exactly_2(
    plane: ControlPlane, controller: ManagedProcess
) -> None:
    apply(
        plane,
        {
            "apiVersion": API,
            "kind": "VirtualMachine",
            "metadata": {"name": "db", "namespace": NAMESPACE},
            "spec": {"runStrategy": "Halted", "cpu": {"vcpus": 1}, "memory": {"size": "64Mi"}},
        },
    )
    for old in ("nightly-a", "nightly-b", "nightly-c"):
        apply(plane, snapshot(old, labelled="nightly"))
        ready(plane, old)
    apply(plane, snapshot("other-a", labelled="other"))
    ready(plane, "other-a")
    apply(plane, schedule("nightly"))
    patch_status(
        plane, "vmsnapsched", "nightly", "-n", NAMESPACE,
        status={"lastSnapshotTime": "2020-01-01T03:00:00Z"},
    )  # fmt: skip
    controller.start()

    def taken() -> str | None:
        found = get(plane, "vmsnapsched", "nightly", "-n", NAMESPACE).get("status") or {}
        return found.get("lastSnapshot") if found.get("kept") == 3 else None

    new: str = eventually(taken, timeout=60, what="the due snapshot taken, one old deleted")
    assert re.fullmatch(r"nightly-\d{8}-0300", new), new
    assert names(plane, "nightly") == {"nightly-b", "nightly-c", new}

    ready(plane, new)
    eventually(
        lambda: names(plane, "nightly") == {"nightly-c", new},
        timeout=60,
        what="the oldest Ready beyond keep deleted",
    )
    status = get(plane, "vmsnapsched", "nightly", "-n", NAMESPACE)["status"]
    assert status["kept"] == 2 and status["lastSnapshot"] == new
    assert status["nextSnapshotTime"].endswith("T03:00:00Z")
    assert names(plane, "other") == {"other-a"}
