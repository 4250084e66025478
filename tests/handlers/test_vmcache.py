"""The controller's VM cache keeps its counts by phase as VMs come, change and go."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from kubevisor.handlers.vmcache import VmCache


def vm(phase: str | None) -> dict[str, Any]:
    return {"metadata": {}, "status": {"phase": phase} if phase else {}}


def recount(cache: VmCache) -> Counter[str]:
    return Counter((o.get("status") or {}).get("phase") or "Pending" for o in cache.values())


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([("set", "a", None)], id="no-phase-is-pending"),
        pytest.param([("set", "a", None), ("set", "a", "Running")], id="a-change-moves-it"),
        pytest.param([("set", "a", "Running"), ("pop", "a", None)], id="pop-uncounts"),
        pytest.param([("set", "a", "Running"), ("del", "a", None)], id="del-uncounts"),
        pytest.param([("pop", "missing", None)], id="pop-of-nothing"),
        pytest.param(
            [("set", "a", "Running"), ("set", "b", "Running"), ("set", "a", "Stopped")],
            id="two-vms",
        ),
        pytest.param([("set", "a", "Running"), ("clear", "", None)], id="clear"),
    ],
)
def test_counts_match_a_recount(steps: list[tuple[str, str, str | None]]) -> None:
    cache = VmCache()
    for op, key, phase in steps:
        if op == "set":
            cache[key] = vm(phase)
        elif op == "pop":
            cache.pop(key, None)
        elif op == "del":
            del cache[key]
        else:
            cache.clear()
    assert +cache.phases == recount(cache)
