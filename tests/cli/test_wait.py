"""`kubevisor wait` on the real API server: exit 0 when reached, 1 on timeout, 2 when the
VM is Stalled; `ready` by the kstatus rules. The tests write status through the status
subresource, as the controller and agent would."""

from __future__ import annotations

from typing import Any

import pytest

from harness import eventually
from kubevisor.cli import wait

pytestmark = pytest.mark.apiserver


def condition(type_: str, status: str, reason: str = "R", message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


READY = condition("Ready", "True", "Running", "running")
NOT_READY = condition("Ready", "False", "Starting", "booting")
RECONCILING = condition("Reconciling", "True", "Starting", "booting")
STALLED = condition("Stalled", "True", "CrashLoop", "the guest crashed 5 times")


def status(phase: str, *conditions: dict[str, str], lag: int = 0) -> dict[str, Any]:
    """A status for generation 1, observed `lag` generations late (observedGeneration 1-lag)."""
    return {"phase": phase, "observedGeneration": 1 - lag, "conditions": list(conditions)}


@pytest.mark.parametrize(
    ("vm_status", "goal", "code", "stderr"),
    [
        pytest.param(status("Running", READY), "ready", 0, "", id="ready"),
        pytest.param(
            status("Starting", NOT_READY, RECONCILING),
            "ready",
            1,
            "timed out after 1s waiting for virtualmachine {name} to be ready: "
            "phase Starting, Reconciling: Starting: booting",
            id="reconciling-times-out",
        ),
        pytest.param(
            status("Running", READY, lag=1),
            "ready",
            1,
            "generation 1 not yet observed (status.observedGeneration 0)",
            id="ready-for-an-old-generation-times-out",
        ),
        pytest.param(
            status("Failed", NOT_READY, STALLED),
            "ready",
            2,
            "virtualmachine {name} is stalled: Stalled: CrashLoop: the guest crashed 5 times",
            id="stalled-exits-2-with-its-message",
        ),
        pytest.param(
            status("Failed", STALLED),
            "running",
            2,
            "the guest crashed 5 times",
            id="stalled-ends-a-phase-wait-too",
        ),
        pytest.param(status("Running", READY), "running", 0, "", id="running"),
        pytest.param(status("Stopped", READY), "stopped", 0, "", id="stopped"),
        pytest.param(
            status("Unschedulable", NOT_READY), "phase=unschedulable", 0, "", id="any-phase"
        ),
        pytest.param(
            status("Running", READY),
            "stopped",
            1,
            "to reach phase Stopped: phase Running",
            id="other-phase-times-out",
        ),
        pytest.param(None, "ready", 1, "no status yet", id="no-status-times-out"),
    ],
)
def test_wait_exit_codes(
    cli: Any,
    objects: Any,
    name: str,
    vm_status: dict[str, Any] | None,
    goal: str,
    code: int,
    stderr: str,
) -> None:
    objects.vm(name)
    if vm_status is not None:
        objects.patch_status("vm", name, vm_status)
    result = cli("wait", name, "-n", objects.namespace, "--for", goal, "--timeout", "1s")
    assert result.code == code
    if code == 0:
        assert result.out == f"virtualmachine.kubevisor.io/{name} condition met\n"
        assert result.err == ""
    else:
        assert result.out == ""
        assert result.err.startswith("error: ") and result.err.count("\n") == 1
        assert stderr.format(name=name) in result.err


def test_wait_sees_the_status_change_while_waiting(cli: Any, objects: Any, name: str) -> None:
    objects.vm(name)
    objects.patch_status("vm", name, status("Starting", NOT_READY, RECONCILING))
    process = cli.spawn("wait", name, "-n", objects.namespace, "--for", "ready", "--timeout", "60s")
    objects.patch_status("vm", name, status("Running", READY, condition("Reconciling", "False")))
    out, err = process.communicate(timeout=60)
    assert (process.returncode, out, err) == (
        0,
        f"virtualmachine.kubevisor.io/{name} condition met\n",
        "",
    )


def test_wait_for_a_deleted_vm_fails(cli: Any, objects: Any, name: str) -> None:
    objects.vm(name)
    process = cli.spawn("wait", name, "-n", objects.namespace, "--timeout", "60s")
    # Let the command find the VM first; then delete it under the wait.
    eventually(lambda: process.poll() is None and objects.get("vm", name), what="the VM")
    objects.plane.kubectl("delete", "vm", name, "-n", objects.namespace)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert err in (
        f"error: virtualmachine {name} was deleted while waiting\n",
        f'error: virtualmachines.kubevisor.io "{name}" not found '
        f"in namespace {objects.namespace}\n",
    )


def test_wait_for_a_missing_vm_fails_at_once(cli: Any, objects: Any) -> None:
    result = cli("wait", "no-such-vm", "-n", objects.namespace, "--timeout", "30s")
    assert result.code == 1
    assert '"no-such-vm" not found' in result.err


@pytest.mark.parametrize(
    "goal",
    [
        pytest.param("healthy", id="unknown-goal"),
        pytest.param("phase=Sleeping", id="unknown-phase"),
    ],
)
def test_bad_for_is_a_usage_error(offline_cli: Any, goal: str) -> None:
    result = offline_cli("wait", "x", "--for", goal)
    assert result.code == 2
    assert "invalid" in result.err or "unknown phase" in result.err


@pytest.mark.parametrize(
    ("text", "goal"),
    [
        pytest.param("ready", wait.Goal("ready"), id="ready"),
        pytest.param("Running", wait.Goal("running", "Running"), id="running-any-case"),
        pytest.param("phase=migrating", wait.Goal("phase", "Migrating"), id="phase-any-case"),
    ],
)
def test_parse_goal(text: str, goal: wait.Goal) -> None:
    assert wait.parse_goal(text) == goal


@pytest.mark.parametrize(
    ("obj", "state"),
    [
        pytest.param(
            {
                "metadata": {"generation": 2, "deletionTimestamp": "2025-01-01T00:00:00Z"},
                "status": status("Running", READY),
            },
            "pending",
            id="terminating-is-never-ready",
        ),
        pytest.param(
            {"metadata": {"generation": 1}, "status": status("Failed", READY, STALLED)},
            "stalled",
            id="stalled-wins-over-ready",
        ),
        pytest.param(
            {"metadata": {"generation": 2}, "status": status("Failed", STALLED)},
            "pending",
            id="stalled-for-an-old-generation-is-not-final",
        ),
        pytest.param(None, "gone", id="missing"),
    ],
)
def test_judge(obj: dict[str, Any] | None, state: str) -> None:
    assert wait.judge(obj, wait.Goal("ready")).state == state
