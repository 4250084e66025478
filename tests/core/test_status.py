"""The agent's status for a bound VM: phase table, kstatus conditions, stable timestamps."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubevisor.api.conditions import Condition
from kubevisor.api.virtualmachine import PlacementStatus, VirtualMachineSpec
from kubevisor.core import imagepulls, resizing, status
from kubevisor.core.convergence import DomainObservation, DomainState
from kubevisor.core.lifecycle import IllegalTransition
from kubevisor.core.resizing import ResizeNote
from kubevisor.core.status import AgentError, Inputs

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def inputs(
    *,
    domain: tuple[str, str] | None = None,
    hardware: str = "hw1",
    deleting: bool = False,
    error: AgentError | None = None,
    **spec: Any,
) -> Inputs:
    observed = None
    if domain is not None:
        observed = DomainObservation(
            uuid="u", state=DomainState(domain[0]), reason=domain[1], hardware="hw1"
        )
    return Inputs(
        spec=VirtualMachineSpec.model_validate({"memory": {"size": "64Mi"}, **spec}),
        generation=2,
        deleting=deleting,
        domain=observed,
        hardware=hardware,
        error=error,
    )


def conditions(result: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in result["conditions"]}


CASES = [
    pytest.param(inputs(), "Starting", False, "True", "False", id="no-domain-yet"),
    pytest.param(
        inputs(runStrategy="Halted"),
        "Stopped",
        True,
        "False",
        "False",
        id="halted-and-stopped-is-ready",
    ),
    pytest.param(
        inputs(domain=("running", "booted")), "Running", True, "False", "False", id="running"
    ),
    pytest.param(
        inputs(domain=("paused", "user"), paused=True),
        "Paused",
        True,
        "False",
        "False",
        id="paused-as-declared",
    ),
    pytest.param(
        inputs(domain=("paused", "user")), "Paused", False, "True", "False", id="resuming"
    ),
    pytest.param(
        inputs(domain=("running", "booted"), runStrategy="Halted"),
        "Stopping",
        False,
        "True",
        "False",
        id="stopping",
    ),
    pytest.param(
        inputs(domain=("shutoff", "crashed"), runStrategy="Once"),
        "Failed",
        False,
        "False",
        "True",
        id="once-crashed-is-stalled",
    ),
    pytest.param(
        inputs(domain=("shutoff", "shutdown"), runStrategy="Once"),
        "Stopped",
        True,
        "False",
        "False",
        id="once-completed",
    ),
    pytest.param(
        inputs(domain=("shutoff", "shutdown")),
        "Starting",
        False,
        "True",
        "False",
        id="always-restarting",
    ),
    pytest.param(
        inputs(domain=("running", "booted"), deleting=True),
        "Terminating",
        False,
        "True",
        "False",
        id="terminating",
    ),
    pytest.param(
        inputs(error=AgentError(permanent=True, reason="InvalidDomain", message="x")),
        "Failed",
        False,
        "False",
        "True",
        id="permanent-error-stalls",
    ),
    pytest.param(
        inputs(error=AgentError(permanent=False, reason="LibvirtDown", message="x")),
        "Starting",
        False,
        "True",
        "False",
        id="retryable-error-keeps-reconciling",
    ),
    pytest.param(
        dataclasses.replace(inputs(), resize=ResizeNote(refused=False, message="waiting")),
        "Stopped",
        False,
        "True",
        "False",
        id="a-start-held-for-the-claim-of-a-new-size",
    ),
    pytest.param(
        dataclasses.replace(
            inputs(domain=("shutoff", "shutdown")),
            resize=ResizeNote(refused=True, message="resize to 8 vCPUs refused"),
        ),
        "Stopped",
        False,
        "True",
        "False",
        id="a-refused-size-keeps-it-stopped-without-stalling",
    ),
]


def test_a_vm_waiting_for_its_network_says_why() -> None:
    """Not "creating the domain" while the agent retries: which Network, and why."""
    message = "team/blue: this host has no tunnel endpoint (agent flag --tunnel-ip)"
    waiting = AgentError(permanent=False, reason=status.NETWORK_NOT_READY, message=message)
    result = status.bound_vm_status(
        inputs(error=waiting), previous_phase=None, previous=[], restart_count=0, now=NOW
    )
    assert result["phase"] == "Starting"
    (ready,) = [c for c in result["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "NetworkNotReady",
        message,
    )
    assert conditions(result)["Reconciling"] == "True"


@pytest.mark.parametrize(("given", "phase", "ready", "reconciling", "stalled"), CASES)
def test_phase_and_kstatus_conditions(
    given: Inputs, phase: str, ready: bool, reconciling: str, stalled: str
) -> None:
    result = status.bound_vm_status(
        given, previous_phase=None, previous=[], restart_count=0, now=NOW
    )
    assert result["phase"] == phase
    got = conditions(result)
    assert got["Ready"] == ("True" if ready else "False")
    assert got["Reconciling"] == reconciling
    assert got["Stalled"] == stalled
    assert not (got["Reconciling"] == "True" and got["Stalled"] == "True")
    assert result["observedGeneration"] == 2
    assert result["created"] is (given.domain is not None)


def test_restart_required_when_hardware_changed_under_a_running_domain() -> None:
    changed = inputs(domain=("running", "booted"), hardware="hw2")
    result = status.bound_vm_status(
        changed, previous_phase="Running", previous=[], restart_count=0, now=NOW
    )
    assert conditions(result)["RestartRequired"] == "True"
    same = inputs(domain=("running", "booted"))
    result = status.bound_vm_status(
        same, previous_phase="Running", previous=[], restart_count=0, now=NOW
    )
    assert conditions(result)["RestartRequired"] == "False"


def test_transition_time_moves_only_when_status_flips() -> None:
    earlier = NOW - timedelta(minutes=5)
    previous = [
        Condition(type="Ready", status="True", reason="Running", last_transition_time=earlier),
        Condition(type="Paused", status="False", reason="NotPaused", last_transition_time=earlier),
    ]
    running = inputs(domain=("running", "booted"))
    result = status.bound_vm_status(
        running, previous_phase="Running", previous=previous, restart_count=0, now=NOW
    )
    times = {c["type"]: c["lastTransitionTime"] for c in result["conditions"]}
    assert times["Ready"] == times["Paused"] == earlier.isoformat().replace("+00:00", "Z")
    paused = inputs(domain=("paused", "user"), paused=True)
    result = status.bound_vm_status(
        paused, previous_phase="Running", previous=previous, restart_count=0, now=NOW
    )
    times = {c["type"]: c["lastTransitionTime"] for c in result["conditions"]}
    assert times["Paused"] == NOW.isoformat().replace("+00:00", "Z")
    assert times["Ready"] == earlier.isoformat().replace("+00:00", "Z")


def test_same_inputs_give_the_same_status() -> None:
    given = inputs(domain=("running", "booted"))
    first = status.bound_vm_status(
        given, previous_phase=None, previous=[], restart_count=1, now=NOW
    )
    again = status.bound_vm_status(
        given,
        previous_phase="Running",
        previous=[Condition.model_validate(c) for c in first["conditions"]],  # type: ignore[attr-defined]
        restart_count=1,
        now=NOW + timedelta(seconds=30),
    )
    assert again == first


@pytest.mark.parametrize(
    ("unenforced", "condition_status", "reason", "message"),
    [
        pytest.param((), "True", "Enforced", "the host enforces every limit of the spec", id="all"),
        pytest.param(
            ("cpu.tune: no cpu controller",),
            "False",
            "NotEnforced",
            "cpu.tune: no cpu controller",
            id="one-unenforced",
        ),
        pytest.param(
            ("cpu.tune: no cpu controller", "numa: no cpuset controller"),
            "False",
            "NotEnforced",
            "cpu.tune: no cpu controller; numa: no cpuset controller",
            id="messages-joined",
        ),
    ],
)
def test_limits_the_host_cannot_enforce_are_reported_without_failing_the_vm(
    unenforced: tuple[str, ...], condition_status: str, reason: str, message: str
) -> None:
    given = dataclasses.replace(inputs(domain=("running", "booted")), unenforced=unenforced)
    result = status.bound_vm_status(
        given, previous_phase="Running", previous=[], restart_count=0, now=NOW
    )
    (limits,) = [c for c in result["conditions"] if c["type"] == status.LIMITS_ENFORCED]  # type: ignore[attr-defined]
    assert (limits["status"], limits["reason"], limits["message"]) == (
        condition_status,
        reason,
        message,
    )
    assert result["phase"] == "Running"
    assert conditions(result)["Ready"] == "True"


# -- image pulls ----------------------------------------------------------------------------

URL = "http://images.example/root.qcow2"
SOURCED = {"disks": [{"name": "root", "source": {"url": URL, "sha256": "a" * 64}}]}
MIB = 1 << 20


def pulling(**pull: Any) -> Inputs:
    state = imagepulls.ImagePullState(**{"disk": "root", "url": URL, **pull})
    return dataclasses.replace(inputs(**SOURCED), pulls=(state,))


def failed(*, permanent: bool, reason: str, message: str, retry_in: float | None = None) -> Inputs:
    failure = imagepulls.PullFailure(
        permanent=permanent, reason=reason, message=message, retry_in=retry_in
    )
    return pulling(received_bytes=MIB, total_bytes=4 * MIB, attempts=2, failure=failure)


def condition(result: dict[str, Any], type_: str) -> tuple[str, str, str]:
    (found,) = [c for c in result["conditions"] if c["type"] == type_]
    return found["status"], found["reason"], found["message"]


@pytest.mark.parametrize(
    ("given", "phase", "ready", "image_pulling", "pulls"),
    [
        pytest.param(
            pulling(received_bytes=3 * MIB, total_bytes=16 * MIB),
            "Starting",
            ("False", "ImagePulling", f"disk root: 3.0 MiB of 16.0 MiB (19%) from {URL}"),
            ("True", "Pulling", f"disk root: 3.0 MiB of 16.0 MiB (19%) from {URL}"),
            [
                {
                    "disk": "root",
                    "url": URL,
                    "receivedBytes": 3 * MIB,
                    "totalBytes": 16 * MIB,
                    "attempts": 1,
                }
            ],
            id="downloading-shows-progress",
        ),
        pytest.param(
            pulling(received_bytes=MIB // 2),
            "Starting",
            ("False", "ImagePulling", f"disk root: 0.5 MiB from {URL}"),
            ("True", "Pulling", f"disk root: 0.5 MiB from {URL}"),
            [{"disk": "root", "url": URL, "receivedBytes": MIB // 2, "attempts": 1}],
            id="size-unknown",
        ),
        pytest.param(
            failed(
                permanent=False, reason="DownloadFailed", message="connection refused", retry_in=4.0
            ),
            "Starting",
            ("False", "ImagePulling", "disk root: connection refused, attempt 2; retrying in 4s"),
            ("True", "DownloadFailed", "disk root: connection refused, attempt 2; retrying in 4s"),
            [
                {
                    "disk": "root",
                    "url": URL,
                    "receivedBytes": MIB,
                    "totalBytes": 4 * MIB,
                    "attempts": 2,
                }
            ],
            id="retryable-failure-keeps-pulling",
        ),
        pytest.param(
            failed(permanent=True, reason="ChecksumMismatch", message="expected a, got b"),
            "Failed",
            ("False", "ChecksumMismatch", "disk root: expected a, got b, attempt 2"),
            ("False", "ChecksumMismatch", "disk root: expected a, got b, attempt 2"),
            [],
            id="permanent-failure-stalls",
        ),
        pytest.param(
            inputs(domain=("running", "booted"), **SOURCED),
            "Running",
            ("True", "Running", "the domain is running"),
            ("False", "Pulled", "disk root: image cached"),
            [],
            id="done",
        ),
    ],
)
def test_image_pulls_in_phase_conditions_and_status(
    given: Inputs,
    phase: str,
    ready: tuple[str, str, str],
    image_pulling: tuple[str, str, str],
    pulls: list[dict[str, Any]],
) -> None:
    result = status.bound_vm_status(
        given, previous_phase="Scheduled", previous=[], restart_count=0, now=NOW
    )
    assert result["phase"] == phase
    assert condition(result, "Ready") == ready
    assert condition(result, "ImagePulling") == image_pulling
    assert result["imagePulls"] == pulls
    assert conditions(result)["Stalled"] == ("True" if phase == "Failed" else "False")
    assert conditions(result)["Reconciling"] == ("True" if phase == "Starting" else "False")


def test_a_permanent_failure_of_one_disk_decides_over_another_still_pulling() -> None:
    base = inputs(
        disks=[
            {"name": "root", "source": {"url": URL, "sha256": "a" * 64}},
            {"name": "data", "source": {"url": URL + "2", "sha256": "b" * 64}},
        ]
    )
    given = dataclasses.replace(
        base,
        pulls=(
            imagepulls.ImagePullState(
                disk="root", url=URL, received_bytes=MIB, total_bytes=2 * MIB
            ),
            imagepulls.ImagePullState(
                disk="data",
                url=URL + "2",
                failure=imagepulls.PullFailure(
                    permanent=True, reason="ImageNotFound", message=f"{URL}2: HTTP 404"
                ),
            ),
        ),
    )
    result = status.bound_vm_status(
        given, previous_phase="Starting", previous=[], restart_count=0, now=NOW
    )
    assert result["phase"] == "Failed"
    assert condition(result, "ImagePulling") == (
        "False",
        "ImageNotFound",
        f"disk root: 1.0 MiB of 2.0 MiB (50%) from {URL}; disk data: {URL}2: HTTP 404",
    )
    assert [p["disk"] for p in result["imagePulls"]] == ["root"]


def test_a_vm_without_source_images_has_no_image_pulling_condition() -> None:
    result = status.bound_vm_status(
        inputs(domain=("running", "booted")),
        previous_phase="Running",
        previous=[],
        restart_count=0,
        now=NOW,
    )
    assert "ImagePulling" not in conditions(result)
    assert "imagePulls" not in result


# -- a spec the agent cannot read -------------------------------------------------------------


def test_an_unreadable_spec_fails_and_stalls_the_vm_keeping_the_time_it_first_did() -> None:
    earlier = NOW - timedelta(minutes=3)
    first = status.invalid_spec_status("bad cpu", generation=4, previous=[], now=earlier)
    assert first["phase"] == "Failed"
    assert first["observedGeneration"] == 4
    assert [
        (c["type"], c["status"], c["reason"], c["message"])
        for c in first["conditions"]  # type: ignore[attr-defined]
    ] == [
        ("Stalled", "True", "InvalidSpec", "bad cpu"),
        ("Ready", "False", "InvalidSpec", "bad cpu"),
    ]
    again = status.invalid_spec_status(
        "bad cpu",
        generation=4,
        previous=[Condition.model_validate(c) for c in first["conditions"]],  # type: ignore[attr-defined]
        now=NOW,
    )
    assert again == first
    assert not status.differs(first, again)


# -- the controller's part ----------------------------------------------------------------------

PLACED = status.Binding(host="h1", placement=None)


def controller(
    *,
    binding: status.Binding | None = None,
    run_strategy: str = "Always",
    **more: Any,
) -> status.ControllerInputs:
    spec = VirtualMachineSpec.model_validate(
        {"memory": {"size": "64Mi"}, "runStrategy": run_strategy}
    )
    return status.ControllerInputs(spec=spec, generation=3, binding=binding, **more)


@pytest.mark.parametrize(
    ("given", "phase", "rows"),
    [
        pytest.param(
            controller(),
            "Pending",
            {
                "Ready": ("False", "Pending"),
                "Reconciling": ("True", "Scheduling"),
                "Stalled": ("False", "NotStalled"),
            },
            id="unbound-waits-for-placement",
        ),
        pytest.param(
            controller(run_strategy="Halted", unschedulable="0/1 hosts fit"),
            "Stopped",
            {
                "Ready": ("True", "Stopped"),
                "Reconciling": ("False", "Done"),
                "Stalled": ("False", "NotStalled"),
            },
            id="halted-before-unschedulable",
        ),
        pytest.param(
            controller(unschedulable="0/1 hosts fit"),
            "Unschedulable",
            {
                "Scheduled": ("False", "Unschedulable"),
                "Ready": ("False", "Unschedulable"),
                "Reconciling": ("True", "Unschedulable"),
                "Stalled": ("False", "NotStalled"),
            },
            id="unschedulable-is-not-stalled",
        ),
        pytest.param(
            controller(
                unschedulable="exceeds quota compute: kubevisor.io/vcpus requested 1, used 2, "
                "hard 2",
                unschedulable_reason="QuotaExceeded",
            ),
            "Pending",
            {
                "Scheduled": ("False", "QuotaExceeded"),
                "Ready": ("False", "QuotaExceeded"),
                "Reconciling": ("True", "QuotaExceeded"),
                "Stalled": ("False", "NotStalled"),
            },
            id="over-quota-is-pending-not-unschedulable",
        ),
        pytest.param(
            controller(binding=PLACED),
            "Scheduled",
            {
                "Scheduled": ("True", "Scheduled"),
                "Ready": ("False", "Scheduled"),
                "Reconciling": ("True", "Scheduled"),
            },
            id="bound-waits-for-its-agent",
        ),
        pytest.param(
            controller(binding=PLACED, host_lost="host h1 is not Ready", migrated_from="h0"),
            None,
            {"Scheduled": ("True", "Migrated")},
            id="migrated-leaves-the-phase-to-the-agent",
        ),
        pytest.param(
            controller(binding=PLACED, host_lost="host h1 is not Ready"),
            "Unknown",
            {"Scheduled": ("True", "Scheduled"), "Ready": ("Unknown", "HostNotReady")},
            id="host-lost-takes-the-phase-back",
        ),
        pytest.param(
            controller(
                binding=PLACED, host_lost="HypervisorHost h1 does not exist", host_missing=True
            ),
            "Unknown",
            {"Scheduled": ("True", "Scheduled"), "Ready": ("Unknown", "HostNotFound")},
            id="host-missing-says-so",
        ),
        pytest.param(
            controller(
                binding=PLACED, eviction={"host": "h1", "reason": "drain"}, migrated_from="h0"
            ),
            None,
            {"Scheduled": ("True", "Evicting")},
            id="evicting-before-everything-bound",
        ),
        pytest.param(
            controller(binding=PLACED, resize=ResizeNote(refused=True, message="too big")),
            None,
            {"Scheduled": ("True", "ResizeRefused")},
            id="a-refused-resize-leaves-the-phase-to-the-agent",
        ),
        pytest.param(
            controller(binding=PLACED, resize=ResizeNote(refused=False, message="resized")),
            None,
            {"Scheduled": ("True", "Resized")},
            id="a-resize-leaves-the-phase-to-the-agent",
        ),
        pytest.param(
            controller(
                binding=PLACED,
                host_lost="host h1 is not Ready",
                resize=ResizeNote(refused=True, message="too big"),
            ),
            "Unknown",
            {"Scheduled": ("True", "Scheduled"), "Ready": ("Unknown", "HostNotReady")},
            id="host-lost-before-a-resize",
        ),
        pytest.param(
            controller(run_strategy="Halted", binding=PLACED),
            "Scheduled",
            {
                "Scheduled": ("True", "Scheduled"),
                "Ready": ("False", "Scheduled"),
                "Reconciling": ("True", "Scheduled"),
            },
            id="a-bound-halted-vm-is-its-agents-to-stop",
        ),
    ],
)
def test_controller_table_first_matching_row_decides(
    given: status.ControllerInputs, phase: str | None, rows: dict[str, tuple[str, str]]
) -> None:
    result = status.controller_vm_status(given, previous_phase=None, previous=[], now=NOW)
    assert result.get("phase") == phase
    got = {c["type"]: (c["status"], c["reason"]) for c in result["conditions"]}  # type: ignore[attr-defined]
    assert got == rows
    assert result["observedGeneration"] == 3
    assert ("host" in result) is (given.binding is not None)


def test_controller_writes_binding_eviction_and_last_migration_as_given() -> None:
    placement = PlacementStatus(emulator_pins=[3])
    last = {"job": "j1", "source": "h0", "target": "h1"}
    result = status.controller_vm_status(
        controller(
            binding=status.Binding(host="h1", placement=placement),
            eviction={"host": "h1", "reason": "host h1 is in maintenance"},
            last_migration=last,
        ),
        previous_phase="Running",
        previous=[],
        now=NOW,
    )
    assert result["host"] == "h1"
    assert result["placement"] == placement.to_wire()
    assert result["eviction"] == {"host": "h1", "reason": "host h1 is in maintenance"}
    assert result["lastMigration"] == last
    (scheduled,) = result["conditions"]  # type: ignore[misc]
    assert scheduled["message"] == "placed on host h1; evicting: host h1 is in maintenance"


def test_an_unbound_vm_carries_no_eviction_even_if_asked() -> None:
    result = status.controller_vm_status(
        controller(eviction={"host": "h1", "reason": "x"}),
        previous_phase=None,
        previous=[],
        now=NOW,
    )
    assert "eviction" not in result
    assert result["phase"] == "Pending"


def test_controller_refuses_a_phase_change_the_lifecycle_forbids() -> None:
    with pytest.raises(IllegalTransition):
        status.controller_vm_status(controller(), previous_phase="Running", previous=[], now=NOW)


def test_vm_differs_compares_placement_as_the_model_reads_it() -> None:
    # The API server leaves out the empty lists the controller writes.
    current = {"placement": {"emulatorPins": [1]}, "host": "h1"}
    one, two = (PlacementStatus(emulator_pins=[pin]).to_wire() for pin in (1, 2))
    assert not status.differs(current, {"placement": one, "host": "h1"})
    assert status.differs(current, {"placement": two, "host": "h1"})
    assert status.differs(current, {"placement": one, "host": "h2"})


def test_the_agent_repeats_the_controllers_refusal_and_the_controller_reads_the_hold() -> None:
    refused = Condition(
        type="Scheduled", status="True", reason="ResizeRefused", message="resize to 8 refused"
    )
    assert resizing.resize_hold([refused], size="8 vCPUs", host="h1") == ResizeNote(
        refused=True, message="resize to 8 refused"
    )
    placed = refused.model_copy(update={"reason": "Scheduled", "message": "placed"})
    assert resizing.resize_hold([placed], size="8 vCPUs", host="h1") == ResizeNote(
        refused=False, message="waiting for the controller to claim 8 vCPUs on host h1"
    )
    held = [
        Condition(type="Ready", status="False", reason=r, message="m")
        for r in ("ResizePending", "ResizeRefused", "Stopped")
    ]
    assert [resizing.holding_for_resize([c]) for c in held] == [True, True, False]
    assert not resizing.holding_for_resize([refused])


@pytest.mark.parametrize(
    ("state", "cold", "phase", "ready"),
    [
        pytest.param("running", False, "Migrating", "True", id="live-keeps-serving"),
        pytest.param("shutoff", False, "Starting", "False", id="live-not-migrating-when-off"),
        pytest.param("shutdown", True, "Migrating", "False", id="cold-while-shutting-down"),
        pytest.param("shutoff", True, "Migrating", "False", id="cold-while-off"),
        pytest.param("paused", True, "Migrating", "False", id="cold-started-paused"),
    ],
)
def test_a_cold_move_is_migrating_whatever_its_domain_does(
    state: str, cold: bool, phase: str, ready: str
) -> None:
    given = dataclasses.replace(
        inputs(domain=(state, "user")),
        migrating_to="h2",
        moving_cold=cold,
    )
    result = status.bound_vm_status(
        given, previous_phase="Running", previous=[], restart_count=0, now=NOW
    )
    assert result["phase"] == phase
    assert conditions(result)["Ready"] == ready
    if cold:
        assert "moving cold to host h2" in str(result["conditions"])
