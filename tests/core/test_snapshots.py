"""Which agent takes a snapshot, how consistent it is, and the status it writes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kubevisor.api.snapshot import SnapshotDisk, VirtualMachineSnapshotStatus
from kubevisor.core import snapshots

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SHA = "ab" * 32


def snap(status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "s", "namespace": "n"}, "spec": {"vm": "web"}}
    if status is not None:
        obj["status"] = status
    return obj


def vm(host: str | None) -> dict[str, Any]:
    labels = {"kubevisor.io/host": host} if host else {}
    return {"metadata": {"name": "web", "namespace": "n", "labels": labels}}


@pytest.mark.parametrize(
    ("snapshot", "the_vm", "takes"),
    [
        pytest.param(snap(), vm("hv-a"), True, id="new-snapshot-of-a-vm-bound-here"),
        pytest.param(snap(), vm("hv-b"), False, id="vm-bound-elsewhere"),
        pytest.param(snap(), vm(None), False, id="vm-not-bound"),
        pytest.param(snap(), None, False, id="no-such-vm-here"),
        pytest.param(snap({"phase": "Ready", "host": "hv-a"}), vm("hv-a"), False, id="ready"),
        pytest.param(snap({"phase": "Failed", "host": "hv-a"}), vm("hv-a"), False, id="failed"),
        pytest.param(
            snap({"phase": "InProgress", "host": "hv-b"}), vm("hv-a"), False, id="another-host"
        ),
        pytest.param(snap({"phase": "InProgress", "host": "hv-a"}), vm("hv-a"), True, id="mine"),
    ],
)
def test_takes(snapshot: dict[str, Any], the_vm: dict[str, Any] | None, takes: bool) -> None:
    assert snapshots.takes(snapshot, the_vm, host="hv-a") is takes


@pytest.mark.parametrize(
    ("running", "frozen", "expected"),
    [
        pytest.param(False, False, "Stopped", id="stopped"),
        pytest.param(True, False, "CrashConsistent", id="running-no-agent"),
        pytest.param(True, True, "GuestFrozen", id="running-frozen"),
    ],
)
def test_consistency(running: bool, frozen: bool, expected: str) -> None:
    assert snapshots.consistency(running=running, frozen=frozen) == expected


@pytest.mark.parametrize(
    ("count", "text"),
    [
        pytest.param(0, "0B", id="zero"),
        pytest.param(1023, "1023B", id="bytes"),
        pytest.param(1536, "1.5KiB", id="kib"),
        pytest.param(13_107_200, "12.5MiB", id="mib"),
        pytest.param(3 << 30, "3.0GiB", id="gib"),
        pytest.param(5 << 50, "5120.0TiB", id="tib-is-the-largest-unit"),
    ],
)
def test_size_text(count: int, text: str) -> None:
    assert snapshots.size_text(count) == text


def common(previous: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "host": "hv-a",
        "vm_uid": "u-1",
        "previous": previous,
        "generation": 1,
        "now": NOW,
        "started": NOW,
    }


def by_type(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_in_progress_is_reconciling_and_not_ready() -> None:
    status = snapshots.status(phase="InProgress", **common())
    VirtualMachineSnapshotStatus.model_validate(status)
    assert status["phase"] == "InProgress"
    assert by_type(status) == {
        "Ready": ("False", "InProgress"),
        "Reconciling": ("True", "InProgress"),
        "Stalled": ("False", "NotStalled"),
    }
    assert "completionTime" not in status


def test_ready_lists_the_images_and_their_total() -> None:
    disks = [
        SnapshotDisk(name="root", sha256=SHA, size=3 << 20, virtual_size=16 << 20),
        SnapshotDisk(name="data", sha256="cd" * 32, size=1 << 20),
    ]
    status = snapshots.status(phase="Ready", disks=disks, consistent="Stopped", **common())
    parsed = VirtualMachineSnapshotStatus.model_validate(status)
    assert [d.name for d in parsed.disks] == ["root", "data"]
    assert (parsed.size, parsed.size_text, parsed.consistency) == (4 << 20, "4.0MiB", "Stopped")
    assert by_type(status)["Ready"] == ("True", "Ready")
    assert by_type(status)["Reconciling"] == ("False", "Done")
    assert status["completionTime"] == "2026-01-02T03:04:05Z"


def test_failed_is_stalled_with_the_reason() -> None:
    status = snapshots.status(
        phase="Failed", reason=snapshots.DISK_FULL, message="no space", **common()
    )
    VirtualMachineSnapshotStatus.model_validate(status)
    assert (status["reason"], status["message"]) == ("DiskFull", "no space")
    assert by_type(status)["Stalled"] == ("True", "DiskFull")
    assert by_type(status)["Ready"] == ("False", "DiskFull")


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    earlier = snapshots.status(phase="InProgress", **common())
    later = snapshots.status(
        phase="InProgress", **{**common(earlier), "now": datetime(2026, 1, 2, 4, tzinfo=UTC)}
    )
    assert later["conditions"] == earlier["conditions"]
