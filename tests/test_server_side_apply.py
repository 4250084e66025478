"""server_side_apply, the model of status hand-offs both in-memory API servers use: each
case applies a sequence of (manager, status) to a VM whose status starts as `seeded` (set
directly, owned by nobody) and checks the status that results."""

from __future__ import annotations

from typing import Any

import pytest

from server_side_apply import Owners, apply_status, held_by, merge

C, A = "kubevisor-controller", "kubevisor-agent"


def ready(status: str) -> dict[str, str]:
    return {"type": "Ready", "status": status}


def scheduled(status: str) -> dict[str, str]:
    return {"type": "Scheduled", "status": status}


@pytest.mark.parametrize(
    ("seeded", "applies", "expected"),
    [
        pytest.param(
            {},
            [(A, {"phase": "Running", "created": True}), (A, {"phase": "Running"})],
            {"phase": "Running"},
            id="a-field-its-owner-stops-applying-goes",
        ),
        pytest.param(
            {},
            [(C, {"host": "h1"}), (A, {"phase": "Running"}), (A, {"phase": "Stopped"})],
            {"host": "h1", "phase": "Stopped"},
            id="another-managers-field-stays",
        ),
        pytest.param(
            {},
            [(C, {"host": "h1"}), (A, {"host": "h1"}), (A, {})],
            {"host": "h1"},
            id="a-field-two-managers-hold-stays-when-one-lets-go",
        ),
        pytest.param(
            {},
            [(C, {"host": "h1"}), (A, {"host": "h2"}), (A, {})],
            {},
            id="a-forced-apply-of-a-new-value-takes-the-field-over",
        ),
        pytest.param(
            {"eviction": {"reason": "drain"}},
            [(A, {"phase": "Running"}), (A, {"phase": "Stopped"})],
            {"eviction": {"reason": "drain"}, "phase": "Stopped"},
            id="a-field-nobody-applied-stays",
        ),
        pytest.param(
            {},
            [
                (C, {"conditions": [scheduled("True")]}),
                (A, {"conditions": [ready("True")]}),
                (A, {"conditions": [ready("False")]}),
            ],
            {"conditions": [scheduled("True"), ready("False")]},
            id="conditions-are-owned-by-type",
        ),
        pytest.param(
            {},
            [(A, {"conditions": [ready("True")]}), (A, {"phase": "Running"})],
            {"phase": "Running"},
            id="a-condition-its-owner-stops-applying-goes",
        ),
    ],
)
def test_applies_hand_fields_over_as_server_side_apply_does(
    seeded: dict[str, Any], applies: list[tuple[str, dict[str, Any]]], expected: dict[str, Any]
) -> None:
    obj: dict[str, Any] = {"status": dict(seeded)}
    owners: Owners = {}
    for manager, status in applies:
        apply_status(obj, owners, manager, status)
    assert obj["status"] == expected


def test_held_by_is_what_a_manager_would_apply_to_keep_its_fields() -> None:
    obj: dict[str, Any] = {"status": {"eviction": {}}}
    owners: Owners = {}
    apply_status(obj, owners, C, {"host": "h1"})
    apply_status(obj, owners, A, {"phase": "Running", "conditions": [ready("True")]})
    assert held_by(obj, owners, A) == {"phase": "Running", "conditions": [ready("True")]}
    assert held_by(obj, owners, C) == {"host": "h1"}


def test_merge_patch_deletes_with_none_and_merges_dicts() -> None:
    target: dict[str, Any] = {"a": {"b": 1, "c": 2}, "d": [1], "e": 1}
    merge(target, {"a": {"b": None, "x": 3}, "d": [2], "e": None})
    assert target == {"a": {"c": 2, "x": 3}, "d": [2]}
