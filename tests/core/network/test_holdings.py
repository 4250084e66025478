"""Tests for `core.network.holdings`: one value per owner, one owner per value."""

from __future__ import annotations

import pytest

from kubevisor.core.network.holdings import Holdings


def _held(*pairs: tuple[str, int]) -> Holdings[str, int]:
    holdings: Holdings[str, int] = Holdings()
    for owner, value in pairs:
        holdings.hold(owner, value)
    return holdings


@pytest.mark.parametrize(
    ("pairs", "owner", "value", "expected_value", "expected_holder"),
    [
        pytest.param((), "a", 1, None, None, id="empty-knows-nothing"),
        pytest.param((("a", 1),), "a", 1, 1, "a", id="held-both-ways"),
        pytest.param((("a", 1), ("b", 2)), "b", 1, 2, "a", id="each-pair-apart"),
    ],
)
def test_lookups_go_both_ways(
    pairs: tuple[tuple[str, int], ...],
    owner: str,
    value: int,
    expected_value: int | None,
    expected_holder: str | None,
) -> None:
    holdings = _held(*pairs)
    assert holdings.value_of(owner) == expected_value
    assert holdings.holder(value) == expected_holder
    assert len(holdings) == len(pairs)
    assert dict(holdings.assignments()) == dict(pairs)


@pytest.mark.parametrize(
    ("owner", "released", "left"),
    [
        pytest.param("a", 1, {"b": 2}, id="release-frees-the-value-too"),
        pytest.param("c", None, {"a": 1, "b": 2}, id="release-of-nothing-changes-nothing"),
    ],
)
def test_release(owner: str, released: int | None, left: dict[str, int]) -> None:
    holdings = _held(("a", 1), ("b", 2))
    assert holdings.release(owner) == released
    assert dict(holdings.assignments()) == left
    assert {holdings.holder(v) for v in (1, 2)} - {None} == set(left)


def test_assignments_is_a_read_only_view() -> None:
    holdings = _held(("a", 1))
    view = holdings.assignments()
    holdings.hold("b", 2)
    assert dict(view) == {"a": 1, "b": 2}
    with pytest.raises(TypeError):
        view["c"] = 3  # type: ignore[index]
